pub(crate) struct AddRmsNorm {
    weight: Vec<f32>,
}
#[automatically_derived]
impl AddRmsNorm {
    /// Runs layer `AddRMSNorm` through the kernel function `kernels.toml` maps it to on the device of its inputs, or through `forward` when none is available there; see `kernels_runtime::dispatch`.
    #[inline]
    pub(crate) fn kernel_forward(
        &self,
        x: &TensorView<'_>,
        residual: &TensorView<'_>,
    ) -> Result<(Vec<f32>, Vec<f32>), MyError> {
        const __KERNELS_REGISTRY: &::kernels_runtime::registry::Registry = &crate::__KERNELS_REGISTRY;
        const _: () = {
            let __kernels_unknown = ::kernels_runtime::__private::check_layer(
                __KERNELS_REGISTRY,
                "AddRMSNorm",
            );
            if !__kernels_unknown.is_empty() {
                ::core::panic!("{}", __kernels_unknown.as_str());
            }
        };
        static __KERNELS_LAYER: ::kernels_runtime::__private::Layer = ::kernels_runtime::__private::Layer::new(
            "AddRMSNorm",
            "AddRmsNorm",
            ::core::module_path!(),
            &["output.0", "output.1", "x", "residual", "self.weight", "1e-6"],
            __KERNELS_REGISTRY,
        );
        let __kernels_error = match __KERNELS_LAYER
            .kernel(
                ::kernels_runtime::__private::KernelArg::device(&x)
                    .or_else(|| ::kernels_runtime::__private::KernelArg::device(
                        &residual,
                    ))
                    .or_else(|| ::kernels_runtime::__private::KernelArg::device(
                        &self.weight,
                    )),
            )
        {
            ::core::result::Result::Ok(
                ::core::option::Option::Some(__kernels_kernel),
            ) => {
                let mut __kernels_output_0 = vec![0f32; x.numel() as usize];
                let mut __kernels_output_1 = vec![0f32; x.numel() as usize];
                let __kernels_called = ::kernels_runtime::__private::call(
                    __kernels_kernel,
                    &[
                        ::kernels_runtime::__private::KernelOutput::kernel_output(
                            &mut __kernels_output_0,
                        ),
                        ::kernels_runtime::__private::KernelOutput::kernel_output(
                            &mut __kernels_output_1,
                        ),
                        ::kernels_runtime::__private::KernelArg::kernel_arg(&x),
                        ::kernels_runtime::__private::KernelArg::kernel_arg(&residual),
                        ::kernels_runtime::__private::KernelArg::kernel_arg(
                            &self.weight,
                        ),
                        ::kernels_runtime::__private::KernelArg::kernel_arg(&1e-6),
                    ],
                );
                match __kernels_called {
                    ::core::result::Result::Ok(()) => {
                        let __kernels_result: Result<(Vec<f32>, Vec<f32>), MyError> = ::core::result::Result::Ok((
                            __kernels_output_0,
                            __kernels_output_1,
                        ));
                        if !::kernels_runtime::__private::verify_due(__kernels_kernel) {
                            return __kernels_result;
                        }
                        match ::kernels_runtime::__private::verify(
                            __kernels_kernel,
                            &__kernels_result,
                            move || self.forward(x, residual),
                            |__kernels_result, __kernels_reference, __kernels_tolerance| match (
                                __kernels_result,
                                __kernels_reference,
                            ) {
                                (
                                    ::core::result::Result::Ok(
                                        (__kernels_kernel_0, __kernels_kernel_1),
                                    ),
                                    ::core::result::Result::Ok(
                                        (__kernels_reference_0, __kernels_reference_1),
                                    ),
                                ) => {
                                    ::core::result::Result::Ok([
                                        ::kernels_runtime::__private::KernelOutput::difference(
                                            __kernels_kernel_0,
                                            __kernels_reference_0,
                                            __kernels_tolerance,
                                        ),
                                        ::kernels_runtime::__private::KernelOutput::difference(
                                            __kernels_kernel_1,
                                            __kernels_reference_1,
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
                return self.forward(x, residual);
            }
            ::core::result::Result::Err(__kernels_error) => __kernels_error,
        };
        ::core::result::Result::Err(
            ::kernels_runtime::__private::layer_error(__kernels_error),
        )
    }
}
