// Per-query records of a retrieval, written by dense_merge.wgsl and
// update.wgsl into one buffer the host reads back.
// Keep in sync with `QueryInfo` in src/kernels/update.rs.
struct QueryInfo {
    lse: f32,       // log sum exp of the scores of the state the last pass saw
    energy: f32,    // E of that state (energy pass: of the final state)
    argmax: u32,    // memory with the largest score (lowest index on ties)
    steps: u32,     // updates applied
    converged: u32, // 1 once an update moved the state by at most eps
    delta: f32,     // max-norm change of the last update
    max_score: f32, // largest score of that state (dense only: what merging shards compares)
    _pad1: u32,
}
