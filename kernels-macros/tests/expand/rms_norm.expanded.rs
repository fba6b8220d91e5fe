pub struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}
#[automatically_derived]
impl RmsNorm {
    /// Runs layer `RMSNorm` through the kernel function `kernels.toml` maps it to on the device of its inputs, or through `forward` when none is available there; see `kernels_runtime::dispatch`.
    #[inline]
    pub fn kernel_forward(
        &self,
        x: &HostTensor<f32>,
    ) -> Result<HostTensor<f32>, DispatchError> {
        const __KERNELS_REGISTRY: &::kernels_runtime::registry::Registry = &crate::__KERNELS_REGISTRY;
        const _: () = {
            let __kernels_unknown = ::kernels_runtime::__private::check_layer(
                __KERNELS_REGISTRY,
                "RMSNorm",
            );
            if !__kernels_unknown.is_empty() {
                ::core::panic!("{}", __kernels_unknown.as_str());
            }
        };
        static __KERNELS_LAYER: ::kernels_runtime::__private::Layer = ::kernels_runtime::__private::Layer::new(
            "RMSNorm",
            "RmsNorm",
            ::core::module_path!(),
            &["output", "x", "self.weight", "self.eps"],
            __KERNELS_REGISTRY,
        );
        let __kernels_error = match __KERNELS_LAYER
            .kernel(
                ::kernels_runtime::__private::KernelArg::device(&x)
                    .or_else(|| ::kernels_runtime::__private::KernelArg::device(
                        &self.weight,
                    ))
                    .or_else(|| ::kernels_runtime::__private::KernelArg::device(
                        &self.eps,
                    )),
            )
        {
            ::core::result::Result::Ok(
                ::core::option::Option::Some(__kernels_kernel),
            ) => {
                let mut __kernels_output = HostTensor::zeros(x.shape());
                let __kernels_called = ::kernels_runtime::__private::call(
                    __kernels_kernel,
                    &[
                        ::kernels_runtime::__private::KernelOutput::kernel_output(
                            &mut __kernels_output,
                        ),
                        ::kernels_runtime::__private::KernelArg::kernel_arg(&x),
                        ::kernels_runtime::__private::KernelArg::kernel_arg(
                            &self.weight,
                        ),
                        ::kernels_runtime::__private::KernelArg::kernel_arg(&self.eps),
                    ],
                );
                match __kernels_called {
                    ::core::result::Result::Ok(()) => {
                        let __kernels_result: Result<HostTensor<f32>, DispatchError> = ::core::result::Result::Ok(
                            __kernels_output,
                        );
                        if !::kernels_runtime::__private::verify_due(__kernels_kernel) {
                            return __kernels_result;
                        }
                        match ::kernels_runtime::__private::verify(
                            __kernels_kernel,
                            &__kernels_result,
                            move || self.forward(x),
                            |__kernels_result, __kernels_reference, __kernels_tolerance| match (
                                __kernels_result,
                                __kernels_reference,
                            ) {
                                (
                                    ::core::result::Result::Ok(__kernels_kernel_0),
                                    ::core::result::Result::Ok(__kernels_reference_0),
                                ) => {
                                    ::core::result::Result::Ok([
                                        ::kernels_runtime::__private::KernelOutput::difference(
                                            __kernels_kernel_0,
                                            __kernels_reference_0,
                                            __kernels_tolerance,
                                        ),
                                    ])
                                }
                                _ => {
                                    ::core::result::Result::Err(
                                        ::kernels_runtime::__private::CompareError::ForwardFailed,
                                    )
                                }
                            },
                        ) {
                            ::core::result::Result::Ok(()) => return __kernels_result,
                            ::core::result::Result::Err(__kernels_error) => {
                                __kernels_error
                            }
                        }
                    }
                    ::core::result::Result::Err(__kernels_error) => __kernels_error,
                }
            }
            ::core::result::Result::Ok(::core::option::Option::None) => {
                return self.forward(x);
            }
            ::core::result::Result::Err(__kernels_error) => __kernels_error,
        };
        ::core::result::Result::Err(
            ::kernels_runtime::__private::layer_error(__kernels_error),
        )
    }
}
