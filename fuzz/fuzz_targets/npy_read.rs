//! Fuzz the `.npy` reader: any bytes must give an array or a typed error,
//! never a panic, an abort, a hang or an allocation beyond what the input
//! can fill. The same bytes are read twice, as a stream of unknown length
//! (`read_2d_from`) and as a regular file (`read_2d`, which knows the length
//! and checks it first): both must agree on success and on the data.
#![no_main]

use std::path::Path;

use hopfield_gpu::npy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let streamed = npy::read_2d_from(data, Path::new("fuzz.npy"));
    if let Ok(a) = &streamed {
        assert_eq!(a.rows.checked_mul(a.cols), Some(a.data.len()), "shape and data disagree");
    }
    let file = tempfile::NamedTempFile::new().expect("temporary file");
    std::fs::write(file.path(), data).expect("write the input");
    let from_file = npy::read_2d(file.path());
    match (&streamed, &from_file) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "stream and file read differently"),
        (Err(_), Err(_)) => {}
        _ => panic!("stream {streamed:?} but file {from_file:?}"),
    }
});
