// A generic tuple struct; computed arguments; a forward named otherwise.
#[kernelize(
    layer = "Scale",
    forward = fn apply(&self, x: &[T]) -> Result<Vec<T>, Box<dyn std::error::Error + Send + Sync>>,
    output = x.to_vec(),
    args = (output, x, self.0 as f64 * 2.0, self.1.len()),
)]
struct Scale<'a, T: Copy>(f32, &'a [T])
where
    T: Default;
