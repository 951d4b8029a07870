// The random mask's rank key, `random_rank_key(seed, l, mu)` of src/method.rs,
// bit for bit (u32 multiplications wrap): smaller keys are drawn first.
// Keep in sync with `random_rank_key` and `lowbias32` there (topk.wgsl holds a
// four-lane copy of the same arithmetic).
fn lowbias32(x0: u32) -> u32 {
    var x = x0;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

fn random_rank_key(seed_lo: u32, seed_hi: u32, l: u32, mu: u32) -> u32 {
    var h = lowbias32(seed_lo ^ 0x9e3779b9u);
    h = lowbias32(h ^ seed_hi);
    h = lowbias32(h ^ l);
    return lowbias32(h ^ mu);
}
