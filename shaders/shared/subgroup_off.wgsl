// No subgroup operations in this module variant (`// #select subgroup`
// off): the device may lack Features::SUBGROUP, and wgpu refuses a module
// that names a subgroup builtin anywhere. These stand-ins are never called:
// every use sits behind `SUBGROUP && HAVE_SUBGROUPS`, false here, so the
// shared-memory reductions run instead.
const HAVE_SUBGROUPS: bool = false;

fn sg_xor4(v: vec4<f32>, mask: u32) -> vec4<f32> {
    return v;
}

fn sg_xor4u(v: vec4<u32>, mask: u32) -> vec4<u32> {
    return v;
}
