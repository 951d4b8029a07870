//! Every WGSL kernel parses and validates with naga. Needs no GPU, so it runs
//! everywhere, including where the GPU tests are switched off.

use std::collections::BTreeSet;

#[test]
fn every_shader_validates_with_naga() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .map(|p| p.file_stem().expect("stem").to_string_lossy().into_owned())
        .collect();
    assert!(!on_disk.is_empty(), "shaders/ holds no .wgsl file");
    let registered: BTreeSet<String> = hopfield_gpu::shaders::ALL.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(on_disk, registered, "shaders/ and shaders::ALL disagree");

    for (name, source) in hopfield_gpu::shaders::ALL {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{name}.wgsl does not parse:\n{}", e.emit_to_string(source)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}.wgsl does not validate:\n{}", e.emit_to_string(source)));
    }
}

/// The host's uniform structs must match the WGSL layouts byte for byte.
#[test]
fn uniform_structs_match_the_wgsl_layouts() {
    for (shader, ty, bytes) in hopfield_gpu::shaders::UNIFORM_LAYOUTS {
        let source = hopfield_gpu::shaders::source(shader).expect("registered");
        let module = naga::front::wgsl::parse_str(source).expect("parses");
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).expect("layouts");
        let (handle, _) = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some(*ty))
            .unwrap_or_else(|| panic!("{shader}.wgsl has no struct {ty}"));
        assert_eq!(layouter[handle].size as usize, *bytes, "{shader}.wgsl struct {ty}: WGSL size vs Rust size");
    }
}
