// Subgroup operations, for the module variants built with `// #select
// subgroup` on (created only where the device has Features::SUBGROUP).
// naga 30 takes the builtins without an `enable` directive (it does not
// implement `enable subgroups;`). A kernel uses them only while its
// override SUBGROUP is true, and the host sets that only where the
// device's smallest subgroup holds the lanes being reduced.
const HAVE_SUBGROUPS: bool = true;

fn sg_xor4(v: vec4<f32>, mask: u32) -> vec4<f32> {
    return subgroupShuffleXor(v, mask);
}

fn sg_xor4u(v: vec4<u32>, mask: u32) -> vec4<u32> {
    return subgroupShuffleXor(v, mask);
}
