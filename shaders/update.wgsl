// One step of the iterated dynamics for methods whose kernels produce z on
// their own (the sparse and feature-map families): replace each state x by
// z unless the query already converged, record steps, the max-norm change and
// convergence, and count the queries still moving. The dense path does the
// same inside dense_merge.wgsl. One workgroup per query.
// Reference: src/cpu/update.rs. Host side: src/kernels/update.rs.

// Keep in sync with `UpdateParams` in src/kernels/update.rs.
struct Params {
    l: u32,
    d: u32,
    eps: f32,
    groups_x: u32, // workgroups along x; the query is x + y * groups_x
}

// #include shared/query_info.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read_write> state: array<f32>;
@group(0) @binding(3) var<storage, read_write> info: array<QueryInfo>;
@group(0) @binding(4) var<storage, read_write> moving: atomic<u32>;

var<workgroup> red: array<f32, 64>;
var<workgroup> skip: u32;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let q = wg.x + wg.y * p.groups_x;
    if (q >= p.l) {
        return; // uniform: q depends on the workgroup only
    }
    if (t == 0u) {
        skip = info[q].converged;
    }
    if (workgroupUniformLoad(&skip) == 1u) {
        return;
    }
    var delta = 0.0;
    for (var c = t; c < p.d; c += 64u) {
        let v = z[q * p.d + c];
        delta = max(delta, abs(v - state[q * p.d + c]));
        state[q * p.d + c] = v;
    }
    red[t] = delta;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t] = max(red[t], red[t + s]);
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        info[q].steps += 1u;
        info[q].delta = red[0];
        if (red[0] <= p.eps) {
            info[q].converged = 1u;
        } else {
            atomicAdd(&moving, 1u);
        }
    }
}

// `energies`: one thread per query copies info[q].energy to energies[q], the
// contiguous [L] f32 layout `Context::encode_retrieve` hands its caller.
@group(0) @binding(5) var<storage, read_write> energies: array<f32>;

@compute @workgroup_size(64)
fn export_energies(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let q = (wg.x + wg.y * p.groups_x) * 64u + t;
    if (q < p.l) {
        energies[q] = info[q].energy;
    }
}
