//! The WGSL sources, compiled into the binary. One kernel per file in
//! `shaders/`; each has a CPU reference of the same name in `src/cpu/`.

/// Every shader: (name, source). The naga validation test walks this list and
/// the `shaders/` folder and fails if they disagree.
pub const ALL: &[(&str, &str)] = &[
    ("dense", include_str!("../shaders/dense.wgsl")),
    ("dense_merge", include_str!("../shaders/dense_merge.wgsl")),
    ("dense_naive", include_str!("../shaders/dense_naive.wgsl")),
    ("topk", include_str!("../shaders/topk.wgsl")),
    ("topk_merge", include_str!("../shaders/topk_merge.wgsl")),
    ("update", include_str!("../shaders/update.wgsl")),
];

/// The source of shader `name`.
pub fn source(name: &str) -> Option<&'static str> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// (shader, WGSL struct, size of the Rust struct that mirrors it). A test
/// checks each against naga's layout of the WGSL, so the two cannot drift.
pub const UNIFORM_LAYOUTS: &[(&str, &str, usize)] = {
    use crate::kernels::dense::{DenseParams, MergeParams, NaiveParams, QueryInfo};
    use crate::kernels::select::{SelectMergeParams, SelectParams};
    use crate::kernels::update::UpdateParams;
    use std::mem::size_of;
    &[
        ("dense", "Params", size_of::<DenseParams>()),
        ("dense_merge", "Params", size_of::<MergeParams>()),
        ("dense_merge", "QueryInfo", size_of::<QueryInfo>()),
        ("dense_naive", "Params", size_of::<NaiveParams>()),
        ("topk", "Params", size_of::<SelectParams>()),
        ("topk_merge", "Params", size_of::<SelectMergeParams>()),
        ("update", "Params", size_of::<UpdateParams>()),
        ("update", "QueryInfo", size_of::<QueryInfo>()),
    ]
};
