// The uniform block every feature_*.wgsl kernel shares (each includes this
// file; build.rs inlines it), so there is one copy to keep in sync.
// Keep in sync with `FeatureParams` in src/kernels/feature.rs (every
// feature_*.wgsl declares this same struct; each uses the fields it needs).
struct Params {
    rows: u32,      // rows (memories or queries) in this dispatch
    d: u32,         // input dimension
    r: u32,         // rank: features per row
    cols: u32,      // dv + 1: value columns plus the normaliser column
    x0: u32,        // first input row of this dispatch, in the bound input
    f0: u32,        // first feature (or first output row, feature_divide)
    f1: u32,        // one past the last feature (feature_poly, feature_answer)
    flag: u32,      // kernel-specific switch, see each kernel's header
    parts: u32,     // memory parts in this round (feature_reduce, feature_merge)
    part_rows: u32, // memories per part
    round: u32,     // index of this round (feature_merge's running max slot)
    scale: f32,     // sqrt(beta) (feature_prf)
    groups_x: u32,  // workgroups along x; the thread is (x + y * groups_x) * 64 + local
    dv: u32,        // value columns
    _pad0: u32,
    _pad1: u32,
}
