//! The WGSL sources, compiled into the binary. One kernel per file in
//! `shaders/`; each has a CPU reference of the same name in `src/cpu/`.
//! Snippets in `shaders/shared/` are prepended where a family shares them
//! (`concat!` below), so a shared struct has one copy.

/// Every shader: (name, source). The naga validation test walks this list and
/// the `shaders/` folder and fails if they disagree.
pub const ALL: &[(&str, &str)] = &[
    ("dense", include_str!("../shaders/dense.wgsl")),
    ("dense_decode", include_str!("../shaders/dense_decode.wgsl")),
    ("dense_merge", include_str!("../shaders/dense_merge.wgsl")),
    ("dense_naive", include_str!("../shaders/dense_naive.wgsl")),
    ("entmax", include_str!("../shaders/entmax.wgsl")),
    ("topk", include_str!("../shaders/topk.wgsl")),
    ("topk_merge", include_str!("../shaders/topk_merge.wgsl")),
    ("update", include_str!("../shaders/update.wgsl")),
    (
        "feature_poly",
        concat!(include_str!("../shaders/shared/feature_params.wgsl"), include_str!("../shaders/feature_poly.wgsl")),
    ),
    (
        "feature_linear",
        concat!(include_str!("../shaders/shared/feature_params.wgsl"), include_str!("../shaders/feature_linear.wgsl")),
    ),
    (
        "feature_prf",
        concat!(include_str!("../shaders/shared/feature_params.wgsl"), include_str!("../shaders/feature_prf.wgsl")),
    ),
    (
        "feature_rowmax",
        concat!(include_str!("../shaders/shared/feature_params.wgsl"), include_str!("../shaders/feature_rowmax.wgsl")),
    ),
    (
        "feature_reduce",
        concat!(include_str!("../shaders/shared/feature_params.wgsl"), include_str!("../shaders/feature_reduce.wgsl")),
    ),
    (
        "feature_merge",
        concat!(include_str!("../shaders/shared/feature_params.wgsl"), include_str!("../shaders/feature_merge.wgsl")),
    ),
    (
        "feature_answer",
        concat!(include_str!("../shaders/shared/feature_params.wgsl"), include_str!("../shaders/feature_answer.wgsl")),
    ),
    (
        "feature_divide",
        concat!(include_str!("../shaders/shared/feature_params.wgsl"), include_str!("../shaders/feature_divide.wgsl")),
    ),
    ("window", include_str!("../shaders/window.wgsl")),
];

/// The source of shader `name`.
pub fn source(name: &str) -> Option<&'static str> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// (shader, WGSL struct, size of the Rust struct that mirrors it). A test
/// checks each against naga's layout of the WGSL, so the two cannot drift.
pub const UNIFORM_LAYOUTS: &[(&str, &str, usize)] = {
    use crate::kernels::dense::{DenseParams, MergeParams, NaiveParams, QueryInfo};
    use crate::kernels::entmax::EntmaxParams;
    use crate::kernels::feature::FeatureParams;
    use crate::kernels::select::{SelectMergeParams, SelectParams};
    use crate::kernels::update::UpdateParams;
    use crate::kernels::window::WindowParams;
    use std::mem::size_of;
    &[
        ("dense", "Params", size_of::<DenseParams>()),
        ("dense_decode", "Params", size_of::<DenseParams>()),
        ("dense_merge", "Params", size_of::<MergeParams>()),
        ("dense_merge", "QueryInfo", size_of::<QueryInfo>()),
        ("dense_naive", "Params", size_of::<NaiveParams>()),
        ("topk", "Params", size_of::<SelectParams>()),
        ("topk_merge", "Params", size_of::<SelectMergeParams>()),
        ("update", "Params", size_of::<UpdateParams>()),
        ("update", "QueryInfo", size_of::<QueryInfo>()),
        ("feature_poly", "Params", size_of::<FeatureParams>()),
        ("feature_linear", "Params", size_of::<FeatureParams>()),
        ("feature_prf", "Params", size_of::<FeatureParams>()),
        ("feature_rowmax", "Params", size_of::<FeatureParams>()),
        ("feature_reduce", "Params", size_of::<FeatureParams>()),
        ("feature_merge", "Params", size_of::<FeatureParams>()),
        ("feature_answer", "Params", size_of::<FeatureParams>()),
        ("feature_divide", "Params", size_of::<FeatureParams>()),
        ("entmax", "Params", size_of::<EntmaxParams>()),
        ("window", "Params", size_of::<WindowParams>()),
    ]
};
