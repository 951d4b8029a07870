// Merge one round's partial sums (feature_reduce) into the bank's S and n,
// part after part in index order (deterministic; no atomics). One thread
// per entry of the r x (dv + 1) state.
// flag bit 0 (random features): parts carry their own constants C_p; all
// are rescaled to the running maximum C, kept per round in cmax[round]
// (read) and cmax[round + 1] (written by thread 0), so no thread reads a
// slot another writes. At the end S and n are both scaled by exp(-C_final):
// one constant for the whole bank, which cancels in z.
// flag bit 1: first round (no earlier state to add).
// Loop iterations per thread: 2 parts.
// #include shared/feature_params.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read> pmax: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read_write> cmax: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let i = (wg.x + wg.y * p.groups_x) * 64u + t;
    let size = p.r * p.cols;
    if (i >= size) {
        return;
    }
    let prf = (p.flag & 1u) == 1u;
    let first = (p.flag & 2u) == 2u;
    var old = -3.0e38;
    if (!first) {
        old = cmax[p.round];
    }
    var c = old;
    if (prf) {
        for (var q = 0u; q < p.parts; q += 1u) {
            c = max(c, pmax[q]);
        }
    } else {
        c = 0.0;
    }
    var acc = 0.0;
    if (!first) {
        acc = state[i];
        if (prf) {
            acc *= exp(old - c);
        }
    }
    for (var q = 0u; q < p.parts; q += 1u) {
        var s = partial[q * size + i];
        if (prf) {
            s *= exp(pmax[q] - c);
        }
        acc += s;
    }
    state[i] = acc;
    if (i == 0u) {
        cmax[p.round + 1u] = c;
    }
}
