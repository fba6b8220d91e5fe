//! `gpu-check-cuda`: the CUDA suite on candle's CUDA backend (feature `cuda`). Usually started
//! by `gpu-check`, which first checks that the CUDA libraries it links can be loaded.

fn main() -> std::process::ExitCode {
    kernels_gpu_check::suite::main()
}
