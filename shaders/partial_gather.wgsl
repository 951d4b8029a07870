// Shard partials (src/partial.rs): for each (query q, slot j) whose memory
// index idx = sel[q * width + j] lies in this segment of the bank, write the
// score beta <x_q, xi_idx> and the value row v_idx, so that the shards'
// top-K lists can be merged on the host. One invocation per (q, j); the host
// dispatches once per segment, and a slot outside the segment (or padding,
// idx = -1) is left to the dispatch that owns it (or to the host, which
// scores padding as -inf).
// The host keeps d + dv below the driver's loop budget (Context::loop_budget).
// Checked through the merge: tests/partial.rs compares merged shards with the
// f64 reference of the whole bank (src/cpu/topk.rs).

// Keep in sync with `GatherParams` in src/kernels/partial.rs.
struct Params {
    l: u32,
    width: u32,
    d: u32,
    dv: u32,
    row0: u32,     // global index of the segment's first memory
    rows: u32,     // memories in the segment
    beta: f32,
    groups_x: u32, // workgroups along x; the slot is (x + y * groups_x) * 64 + t
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> queries: array<f32>;
@group(0) @binding(2) var<storage, read> keys: array<f32>;
@group(0) @binding(3) var<storage, read> vals: array<f32>;
@group(0) @binding(4) var<storage, read> sel: array<i32>;
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;
@group(0) @binding(6) var<storage, read_write> out_vals: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let i = (wg.x + wg.y * p.groups_x) * 64u + t;
    if (i >= p.l * p.width) {
        return;
    }
    let idx = sel[i];
    if (idx < 0 || u32(idx) < p.row0 || u32(idx) - p.row0 >= p.rows) {
        return;
    }
    let r = u32(idx) - p.row0;
    let q = i / p.width;
    var s = 0.0;
    for (var c = 0u; c < p.d; c++) {
        s += queries[q * p.d + c] * keys[r * p.d + c];
    }
    scores[i] = p.beta * s;
    for (var c = 0u; c < p.dv; c++) {
        out_vals[i * p.dv + c] = vals[r * p.dv + c];
    }
}
