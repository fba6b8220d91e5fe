struct Scale<'a, T: Copy>(
    f32,
    &'a [T],
)
where
    T: Default;
#[automatically_derived]
impl<'a, T: Copy> Scale<'a, T>
where
    T: Default,
{
    /// Runs layer `Scale` through the kernel function `kernels.toml` maps it to on the device of its inputs, or through `apply` when none is available there; see `kernels_runtime::dispatch`.
    #[inline]
    fn kernel_apply(
        &self,
        x: &[T],
    ) -> Result<Vec<T>, Box<dyn std::error::Error + Send + Sync>> {
        const __KERNELS_REGISTRY: &::kernels_runtime::registry::Registry = &crate::__KERNELS_REGISTRY;
        const _: () = {
            let __kernels_unknown = ::kernels_runtime::__private::check_layer(
                __KERNELS_REGISTRY,
                "Scale",
            );
            if !__kernels_unknown.is_empty() {
                ::core::panic!("{}", __kernels_unknown.as_str());
            }
        };
        static __KERNELS_LAYER: ::kernels_runtime::__private::Layer = ::kernels_runtime::__private::Layer::new(
            "Scale",
            "Scale",
            ::core::module_path!(),
            &["output", "x", "self.0 as f64 * 2.0", "self.1.len()"],
            __KERNELS_REGISTRY,
        );
        let __kernels_error = match __KERNELS_LAYER
            .kernel(::kernels_runtime::__private::KernelArg::device(&x))
        {
            ::core::result::Result::Ok(
                ::core::option::Option::Some(__kernels_kernel),
            ) => {
                let mut __kernels_output = x.to_vec();
                let __kernels_called = ::kernels_runtime::__private::call(
                    __kernels_kernel,
                    &[
                        ::kernels_runtime::__private::KernelOutput::kernel_output(
                            &mut __kernels_output,
                        ),
                        ::kernels_runtime::__private::KernelArg::kernel_arg(&x),
                        ::kernels_runtime::__private::KernelArg::kernel_arg(
                            &(self.0 as f64 * 2.0),
                        ),
                        ::kernels_runtime::__private::KernelArg::kernel_arg(
                            &self.1.len(),
                        ),
                    ],
                );
                match __kernels_called {
                    ::core::result::Result::Ok(()) => {
                        let __kernels_result: Result<
                            Vec<T>,
                            Box<dyn std::error::Error + Send + Sync>,
                        > = ::core::result::Result::Ok(__kernels_output);
                        if !::kernels_runtime::__private::verify_due(__kernels_kernel) {
                            return __kernels_result;
                        }
                        match ::kernels_runtime::__private::verify(
                            __kernels_kernel,
                            &__kernels_result,
                            move || self.apply(x),
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
                return self.apply(x);
            }
            ::core::result::Result::Err(__kernels_error) => __kernels_error,
        };
        ::core::result::Result::Err(
            ::kernels_runtime::__private::layer_error(__kernels_error),
        )
    }
}
