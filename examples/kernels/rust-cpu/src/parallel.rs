//! Splitting rows over threads, for large inputs only.
//!
//! Work goes to a rayon pool: its threads persist between calls, so a split costs a few
//! microseconds, where spawning threads per call would cost tens.

/// Below these element counts a call runs on the calling thread: handing work to the pool
/// costs more than it saves. Memory-bound normalisations need larger inputs to gain than
/// `silu_and_mul`, which spends several nanoseconds per element in `exp`.
pub(crate) const PARALLEL_MIN_ELEMENTS_ACTIVATION: usize = 64 * 1024;
/// See [`PARALLEL_MIN_ELEMENTS_ACTIVATION`].
pub(crate) const PARALLEL_MIN_ELEMENTS_NORM: usize = 256 * 1024;

/// Each task gets at least this many elements.
const MIN_ELEMENTS_PER_TASK: usize = 16 * 1024;

/// Tasks per pool thread, so that uneven progress evens out.
const TASKS_PER_THREAD: usize = 4;

/// How many rows each task gets, for `rows` rows holding `elements` elements in all: all rows
/// in one task below `min_elements`, else an even split into a few tasks per thread.
pub(crate) fn rows_per_task(elements: usize, rows: usize, min_elements: usize) -> usize {
    let rows = rows.max(1);
    let threads = rayon::current_num_threads();
    if elements < min_elements || threads < 2 {
        return rows;
    }
    let tasks = (threads * TASKS_PER_THREAD).min(elements / MIN_ELEMENTS_PER_TASK).min(rows).max(1);
    rows.div_ceil(tasks)
}

/// Runs `work` on every task: on the calling thread when there is one task, else on the pool
/// (the calling thread helps).
pub(crate) fn run<I>(tasks: I, work: impl Fn(I::Item) + Sync)
where
    I: Iterator,
    I::Item: Send,
{
    let mut tasks = tasks.peekable();
    let Some(first) = tasks.next() else { return };
    if tasks.peek().is_none() {
        return work(first);
    }
    let work = &work;
    rayon::in_place_scope(|scope| {
        for task in tasks {
            scope.spawn(move |_| work(task));
        }
        work(first);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_inputs_stay_on_one_thread() {
        let min = PARALLEL_MIN_ELEMENTS_NORM;
        assert_eq!(rows_per_task(1000, 10, min), 10);
        assert_eq!(rows_per_task(min - 1, 7, min), 7);
        assert_eq!(rows_per_task(0, 0, min), 1);
        // One huge row cannot be split.
        assert_eq!(rows_per_task(1 << 24, 1, min), 1);
        // Large inputs split evenly, never into empty tasks.
        let rows = 1000;
        let per = rows_per_task(rows * 4096, rows, min);
        if rayon::current_num_threads() > 1 {
            assert_eq!(per, rows.div_ceil(rayon::current_num_threads() * TASKS_PER_THREAD));
        } else {
            assert_eq!(per, rows);
        }
    }

    #[test]
    fn every_task_runs_once() {
        let mut data = vec![0u32; 1000];
        run(data.chunks_mut(7).enumerate(), |(i, chunk)| chunk.iter_mut().for_each(|v| *v += i as u32 + 1));
        for (i, chunk) in data.chunks(7).enumerate() {
            assert!(chunk.iter().all(|&v| v == i as u32 + 1));
        }
    }
}
