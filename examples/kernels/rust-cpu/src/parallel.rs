//! Splitting rows over threads, for large inputs only.

use std::sync::OnceLock;

/// Inputs with fewer elements run on the calling thread: below this, starting threads costs
/// more than it saves.
pub(crate) const PARALLEL_MIN_ELEMENTS: usize = 64 * 1024;

/// Each extra thread gets at least this many elements.
const MIN_ELEMENTS_PER_THREAD: usize = 32 * 1024;

fn threads_available() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// How many rows each task gets, for `rows` rows holding `elements` elements in all: all rows
/// in one task below [`PARALLEL_MIN_ELEMENTS`], else an even split over at most as many tasks
/// as the machine has threads.
pub(crate) fn rows_per_task(elements: usize, rows: usize) -> usize {
    let rows = rows.max(1);
    if elements < PARALLEL_MIN_ELEMENTS {
        return rows;
    }
    let tasks = threads_available().min(elements / MIN_ELEMENTS_PER_THREAD).min(rows).max(1);
    rows.div_ceil(tasks)
}

/// Runs `work` on every task: the first on the calling thread, the others on scoped threads.
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
    std::thread::scope(|scope| {
        for task in tasks {
            scope.spawn(move || work(task));
        }
        work(first);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_inputs_stay_on_one_thread() {
        assert_eq!(rows_per_task(1000, 10), 10);
        assert_eq!(rows_per_task(PARALLEL_MIN_ELEMENTS - 1, 7), 7);
        assert_eq!(rows_per_task(0, 0), 1);
        // Large inputs split evenly, never into empty tasks.
        let rows = 1000;
        let per = rows_per_task(rows * 4096, rows);
        assert_eq!(per, rows.div_ceil(threads_available().min(rows)));
        // One huge row cannot be split.
        assert_eq!(rows_per_task(1 << 24, 1), 1);
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
