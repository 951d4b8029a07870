// The running statistics of one query's online softmax (FlashAttention's
// inner loop), shared by dense.wgsl and dense_decode.wgsl. Per tile a kernel
// finds the tile's largest score, calls online_max, exponentiates the
// tile's scores against the returned max, and calls online_add with their
// sum; it rescales its output accumulators by the factor online_add returns.
// #include shared/neg.wgsl

struct Online {
    max: f32, // running max of the scores seen
    sum: f32, // sum of exp(s - max) over them
    arg: u32, // index of the (first) memory that holds the max
}

fn online_new() -> Online {
    return Online(NEG, 0.0, 0u);
}

// The new running max after a tile whose largest score is tile_max, held
// first by memory tile_arg; strictly larger wins, so the lowest index keeps ties.
fn online_max(o: ptr<function, Online>, tile_max: f32, tile_arg: u32) -> f32 {
    if (tile_max > (*o).max) {
        (*o).arg = tile_arg;
    }
    return max((*o).max, tile_max);
}

// Move to new_max and add the tile's sum of exp(s - new_max); returns the
// factor exp(old max - new max) by which earlier accumulators are rescaled.
fn online_add(o: ptr<function, Online>, new_max: f32, tile_sum: f32) -> f32 {
    let a = exp((*o).max - new_max);
    (*o).sum = (*o).sum * a + tile_sum;
    (*o).max = new_max;
    return a;
}
