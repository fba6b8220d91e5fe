fn main() {
    kernels_build::build().unwrap();
}
