//! Tests of `hopfield_gpu::npy`: the reader against files built byte by byte
//! here (so that they do not depend on the writer under test), the writers by
//! decoding their bytes here, the shipped data sets, and every kind of bad file.

use std::path::{Path, PathBuf};

use hopfield_gpu::npy::{self, Array2};
use hopfield_gpu::Error;

/// A `.npy` file (version 1.0) with the given header fields and raw data,
/// padded as NumPy pads it (magic + length + header a multiple of 64 bytes).
fn npy_bytes(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let fortran = if fortran { "True" } else { "False" };
    let header = format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
    with_header_text(&header, data)
}

/// A version 1.0 `.npy` file with arbitrary header text.
fn with_header_text(header: &str, data: &[u8]) -> Vec<u8> {
    let mut text = header.to_string();
    while !(10 + text.len() + 1).is_multiple_of(64) {
        text.push(' ');
    }
    text.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend(u16::try_from(text.len()).expect("test header fits u16").to_le_bytes());
    out.extend(text.as_bytes());
    out.extend(data);
    out
}

/// Write `bytes` to a file in a fresh temporary directory.
fn file_with(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("a.npy");
    std::fs::write(&path, bytes).expect("write test file");
    (dir, path)
}

fn read_bytes(bytes: &[u8]) -> hopfield_gpu::Result<Array2> {
    let (_dir, path) = file_with(bytes);
    npy::read_2d(&path)
}

/// The reason in a `BadFile` error; fails the test on any other outcome.
fn bad_file_reason(bytes: &[u8]) -> String {
    let (_dir, path) = file_with(bytes);
    match npy::read_2d(&path) {
        Err(Error::BadFile { path: p, why }) => {
            assert_eq!(p, path, "BadFile names the file");
            why
        }
        Err(other) => panic!("expected BadFile, got {other:?}"),
        Ok(a) => panic!("expected BadFile, got a {} x {} array", a.rows, a.cols),
    }
}

fn assert_bits_eq(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "index {i}: got {g:e}, want {w:e}");
    }
}

/// Split a written `.npy` file into its header text and data, checking the
/// magic, the version 1.0 length field and NumPy's 64-byte alignment.
fn split_written(path: &Path) -> (String, Vec<u8>) {
    let bytes = std::fs::read(path).expect("read written file");
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "magic and version 1.0");
    let len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    assert_eq!((10 + len) % 64, 0, "header padded to a multiple of 64 bytes");
    let text = String::from_utf8(bytes[10..10 + len].to_vec()).expect("ASCII header");
    assert!(text.ends_with('\n'), "header ends with a newline");
    (text, bytes[10 + len..].to_vec())
}

/// The header's `shape` value with spaces removed, e.g. `(2,3,)`.
fn shape_of(header: &str) -> String {
    let start = header.find("'shape': ").expect("shape key") + "'shape': ".len();
    let end = start + header[start..].find(')').expect("shape tuple") + 1;
    header[start..end].replace(' ', "")
}

#[test]
fn f32_2d_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    let data = [0.0, -0.0, 1.5, -2.25, f32::MIN_POSITIVE / 4.0, f32::MAX, 1e-7, 3.0e5, -7.0, 0.1, 0.2, 0.3];
    npy::write_f32_2d(&path, 3, 4, &data).unwrap();
    let a = npy::read_2d(&path).unwrap();
    assert_eq!((a.rows, a.cols), (3, 4));
    assert_bits_eq(&a.data, &data);
    assert_eq!(a.row(1), &data[4..8]);

    let (header, raw) = split_written(&path);
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    assert_eq!(shape_of(&header), "(3,4,)");
    assert_eq!(raw.len(), 48);
}

#[test]
fn zero_rows_round_trip_with_their_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.npy");
    npy::write_f32_2d(&path, 0, 5, &[]).unwrap();
    let a = npy::read_2d(&path).unwrap();
    assert_eq!((a.rows, a.cols, a.data.len()), (0, 5, 0));

    // And a hand-made one, as NumPy writes it.
    let a = read_bytes(&npy_bytes("<f8", false, "(0, 7)", &[])).unwrap();
    assert_eq!((a.rows, a.cols, a.data.len()), (0, 7, 0));
}

#[test]
fn reads_float64_and_converts_to_f32() {
    let values = [0.1f64, -2.5, 1e300, -1e300, 1e-50, f64::NAN];
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let a = read_bytes(&npy_bytes("<f8", false, "(2, 3)", &raw)).unwrap();
    assert_eq!((a.rows, a.cols), (2, 3));
    assert_eq!(a.data[0], 0.1f32, "rounded to nearest f32");
    assert_eq!(a.data[1], -2.5);
    // Beyond f32's range: infinite, for the library's finite check to reject.
    assert_eq!(a.data[2], f32::INFINITY);
    assert_eq!(a.data[3], f32::NEG_INFINITY);
    assert_eq!(a.data[4], 0.0);
    assert!(a.data[5].is_nan());
}

#[test]
fn reads_uint8() {
    let raw = [0u8, 1, 2, 127, 128, 255];
    let a = read_bytes(&npy_bytes("|u1", false, "(3, 2)", &raw)).unwrap();
    assert_eq!((a.rows, a.cols), (3, 2));
    assert_bits_eq(&a.data, &[0.0, 1.0, 2.0, 127.0, 128.0, 255.0]);
}

#[test]
fn reads_big_endian() {
    let values = [1.0f32, -3.5, 1e-30, 65504.0];
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    let a = read_bytes(&npy_bytes(">f4", false, "(2, 2)", &raw)).unwrap();
    assert_bits_eq(&a.data, &values);

    let raw: Vec<u8> = [0.5f64, -8.0].iter().flat_map(|v| v.to_be_bytes()).collect();
    let a = read_bytes(&npy_bytes(">f8", false, "(1, 2)", &raw)).unwrap();
    assert_bits_eq(&a.data, &[0.5, -8.0]);
}

#[test]
fn reads_version_2_headers() {
    let text = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }\n";
    let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
    bytes.extend(u32::try_from(text.len()).unwrap().to_le_bytes());
    bytes.extend(text.as_bytes());
    bytes.extend(2.0f32.to_le_bytes());
    bytes.extend(4.0f32.to_le_bytes());
    let a = read_bytes(&bytes).unwrap();
    assert_bits_eq(&a.data, &[2.0, 4.0]);
}

fn data_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name)
}

#[test]
fn digits_data_set() {
    let path = data_file("digits.npy");
    let a = npy::read_2d(&path).unwrap();
    assert_eq!((a.rows, a.cols), (1797, 64));
    assert_eq!(a.data.len(), 1797 * 64);
    assert!(a.data.iter().all(|&v| (0.0..=16.0).contains(&v) && v.fract() == 0.0));
    assert_eq!(a.data.iter().copied().fold(0.0, f32::max), 16.0);

    // The first row, decoded straight from the bytes.
    let bytes = std::fs::read(&path).unwrap();
    let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '|u1'"), "{header}");
    let first: Vec<f32> = bytes[10 + header_len..][..64].iter().map(|&b| f32::from(b)).collect();
    assert_bits_eq(a.row(0), &first);
    // Digit 0 of scikit-learn's load_digits: blank corners, ink in the middle.
    assert_eq!(a.row(0)[..8], [0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0]);
}

#[test]
fn patches_data_set() {
    let a = npy::read_2d(&data_file("patches8x8.npy")).unwrap();
    assert_eq!((a.rows, a.cols), (4096, 192));
    assert!(a.data.iter().all(|&v| (0.0..=255.0).contains(&v) && v.fract() == 0.0));
}

#[test]
fn labels_are_1d_and_say_so() {
    let why = {
        let path = data_file("digits_labels.npy");
        match npy::read_2d(&path) {
            Err(Error::BadFile { why, .. }) => why,
            other => panic!("expected BadFile, got {other:?}"),
        }
    };
    assert!(why.contains("expected a 2-D array, found shape [1797]"), "{why}");
}

#[test]
fn missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.npy");
    match npy::read_2d(&path) {
        Err(Error::Io { path: p, source }) => {
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(npy::read_2d(dir.path()), Err(Error::Io { .. })));
}

#[test]
fn text_and_empty_files_are_not_npy() {
    for bytes in [&b"1.0,2.0,3.0\n4.0,5.0,6.0\n"[..], b"", b"\x93NUM"] {
        let why = bad_file_reason(bytes);
        assert!(why.contains("not a NumPy .npy file (bad magic)"), "{why}");
    }
}

#[test]
fn truncated_data_says_how_much_is_there() {
    let raw: Vec<u8> = (0..24u8).collect(); // a 2 x 3 f32 array needs 24 bytes
    let full = npy_bytes("<f4", false, "(2, 3)", &raw);
    assert!(read_bytes(&full).is_ok());
    for keep in [0, 1, 14, 23] {
        let cut = &full[..full.len() - 24 + keep];
        let why = bad_file_reason(cut);
        assert!(why.contains(&format!("file ends after {keep} of 24 data bytes")), "{why}");
    }
}

#[test]
fn truncated_header_is_reported() {
    let full = npy_bytes("<f4", false, "(2, 3)", &[0; 24]);
    for cut in [6, 7, 9, 10, 40] {
        let why = bad_file_reason(&full[..cut]);
        assert!(why.contains("file ends"), "cut at {cut}: {why}");
    }
}

#[test]
fn extra_bytes_after_the_data_are_refused() {
    let why = bad_file_reason(&npy_bytes("<f4", false, "(2, 3)", &[0; 30]));
    assert!(why.contains("6 extra bytes after the 24 data bytes"), "{why}");
}

#[test]
fn wrong_rank_names_the_shape() {
    let why = bad_file_reason(&npy_bytes("<f4", false, "(2, 3, 4)", &[0; 96]));
    assert!(why.contains("expected a 2-D array, found shape [2, 3, 4]"), "{why}");
    let why = bad_file_reason(&npy_bytes("<f4", false, "(6,)", &[0; 24]));
    assert!(why.contains("expected a 2-D array, found shape [6]"), "{why}");
    let why = bad_file_reason(&npy_bytes("<f4", false, "()", &[0; 4]));
    assert!(why.contains("expected a 2-D array, found shape []"), "{why}");
}

#[test]
fn fortran_order_is_refused() {
    let why = bad_file_reason(&npy_bytes("<f4", true, "(2, 3)", &[0; 24]));
    assert!(why.contains("Fortran"), "{why}");
}

#[test]
fn unsupported_dtypes_are_named() {
    for (descr, size) in [("<i8", 8), ("<i4", 4), ("|i1", 1), ("<u2", 2), ("|b1", 1), ("<f2", 2), ("<c8", 8)] {
        let why = bad_file_reason(&npy_bytes(descr, false, "(1, 2)", &vec![0; 2 * size]));
        assert!(why.contains(&format!("dtype {descr} is not supported: use float32, float64 or uint8")), "{why}");
    }
    let header = "{'descr': [('a', '<f4'), ('b', '<f4')], 'fortran_order': False, 'shape': (1, 2), }";
    let why = bad_file_reason(&with_header_text(header, &[0; 16]));
    assert!(why.contains("is not supported"), "{why}");
}

#[test]
fn malformed_headers_are_bad_files() {
    let cases = [
        // Not a Python literal, or not a dict, or missing keys.
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), ",
        "[1, 2, 3]",
        "{'descr': '<f4', 'shape': (2, 3), }",
        "{'descr': 'float32', 'fortran_order': False, 'shape': (2, 3), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2.0, 3), }",
        // Shapes whose element count overflows: npyz would panic on these.
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (0x100000000, 0x100000000), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (123456789012345678901234567890, 1), }",
    ];
    for header in cases {
        let why = bad_file_reason(&with_header_text(header, &[0; 24]));
        assert!(why.contains("header"), "{header}: {why}");
    }

    // npyz's parser takes time exponential in the nesting depth (minutes at 10).
    let deep = format!("{{'descr': '<f4', 'x': {}{}}}", "[".repeat(3000), "]".repeat(3000));
    let why = bad_file_reason(&with_header_text(&deep, &[]));
    assert!(why.contains("nest"), "{why}");

    // A header too long for NumPy to read.
    let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
    bytes.extend(u32::MAX.to_le_bytes());
    let why = bad_file_reason(&bytes);
    assert!(why.contains("header is 4294967295 bytes long"), "{why}");

    let mut bytes = b"\x93NUMPY\x04\x00".to_vec();
    bytes.extend([0; 8]);
    let why = bad_file_reason(&bytes);
    assert!(why.contains("unsupported .npy format version 4.0"), "{why}");
}

#[test]
fn a_huge_shape_in_a_small_file_fails_without_allocating_it() {
    // 10^12 f32 values claimed, 8 bytes present.
    let why = bad_file_reason(&npy_bytes("<f4", false, "(1000000, 1000000)", &[0; 8]));
    assert!(why.contains("file ends after 8 of 4000000000000 data bytes"), "{why}");
    // More bytes than any machine can address.
    let why = bad_file_reason(&npy_bytes("<f8", false, "(4294967296, 4294967295)", &[0; 8]));
    assert!(why.contains("more memory than this machine can address"), "{why}");
}

#[test]
fn i32_and_i64_writers_write_what_numpy_reads() {
    let dir = tempfile::tempdir().unwrap();

    let path = dir.path().join("idx32.npy");
    let values = [0, 1, -1, i32::MAX, i32::MIN, 7];
    npy::write_i32_2d(&path, 2, 3, &values).unwrap();
    let (header, raw) = split_written(&path);
    assert!(header.contains("'descr': '<i4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    assert_eq!(shape_of(&header), "(2,3,)");
    let decoded: Vec<i32> = raw.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(decoded, values);

    let path = dir.path().join("idx64.npy");
    let values = [-1i64, 0, 1 << 40, i64::MIN];
    npy::write_i64_2d(&path, 4, 1, &values).unwrap();
    let (header, raw) = split_written(&path);
    assert!(header.contains("'descr': '<i8'"), "{header}");
    assert_eq!(shape_of(&header), "(4,1,)");
    let decoded: Vec<i64> = raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(decoded, values);

    // Integer files are not readable as patterns: the reader says why.
    let why = match npy::read_2d(&path) {
        Err(Error::BadFile { why, .. }) => why,
        other => panic!("expected BadFile, got {other:?}"),
    };
    assert!(why.contains("dtype <i8 is not supported"), "{why}");
}

#[test]
fn one_dimensional_writers() {
    let dir = tempfile::tempdir().unwrap();

    let path = dir.path().join("steps.npy");
    npy::write_i32_1d(&path, &[3, -1, 12]).unwrap();
    let (header, raw) = split_written(&path);
    assert!(header.contains("'descr': '<i4'"), "{header}");
    assert_eq!(shape_of(&header), "(3,)");
    assert_eq!(raw, [3i32, -1, 12].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());

    let path = dir.path().join("steps_u32.npy");
    npy::write_u32_1d(&path, &[3, 4_000_000_000]).unwrap();
    let (header, raw) = split_written(&path);
    assert!(header.contains("'descr': '<u4'"), "{header}");
    assert_eq!(shape_of(&header), "(2,)");
    assert_eq!(raw, [3u32, 4_000_000_000].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());

    let path = dir.path().join("energy.npy");
    npy::write_f32_1d(&path, &[0.5, -1.0]).unwrap();
    let (header, raw) = split_written(&path);
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert_eq!(shape_of(&header), "(2,)");
    assert_eq!(raw, [0.5f32, -1.0].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());

    let path = dir.path().join("none.npy");
    npy::write_f32_1d(&path, &[]).unwrap();
    let (header, raw) = split_written(&path);
    assert_eq!(shape_of(&header), "(0,)");
    assert!(raw.is_empty());
}

#[test]
fn writers_check_the_shape_and_report_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    match npy::write_f32_2d(&path, 2, 3, &[0.0; 5]) {
        Err(Error::ShapeMismatch { expected: 6, got: 5, .. }) => {}
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    assert!(!path.exists(), "nothing written on a shape mismatch");
    assert!(matches!(npy::write_i32_2d(&path, usize::MAX, 2, &[0; 4]), Err(Error::ShapeMismatch { .. })));

    let missing_dir = dir.path().join("no/such/dir/x.npy");
    match npy::write_f32_2d(&missing_dir, 1, 1, &[1.0]) {
        Err(Error::Io { path: p, .. }) => assert_eq!(p, missing_dir),
        other => panic!("expected Io, got {other:?}"),
    }
}

/// Issue 8 §6.9: a header claiming a huge shape followed by an endless stream
/// (`cat header /dev/zero | ... --memories /dev/stdin`) was read until the
/// process was killed. Now the claim is checked against the memory available
/// before any data is read.
#[test]
fn an_endless_stream_claiming_a_huge_shape_is_refused_before_reading() {
    /// An endless reader of zeros that counts what it delivered.
    struct Zeros(u64);
    impl std::io::Read for Zeros {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            buf.fill(0);
            self.0 += buf.len() as u64;
            // A stand-in for the OOM kill: the test fails instead of hanging.
            assert!(self.0 < 1 << 30, "read a GiB of an endless stream");
            Ok(buf.len())
        }
    }
    let header = npy_bytes("<f4", false, "(1000000, 1000000)", &[]);
    let mut zeros = Zeros(0);
    let name = Path::new("/dev/stdin");
    match npy::read_2d_from(std::io::Read::chain(&header[..], &mut zeros), name) {
        Err(Error::HostMemory { what, needed, .. }) => {
            assert!(what.contains("/dev/stdin") && what.contains("[1000000, 1000000]"), "{what}");
            assert_eq!(needed, Some(4_000_000_000_000));
        }
        other => panic!("expected HostMemory, got {other:?}"),
    }
    assert!(zeros.0 <= 1 << 16, "read {} bytes of data before refusing", zeros.0);
    let msg = npy::read_2d_from(std::io::Read::chain(&header[..], std::io::repeat(0)), name).unwrap_err().to_string();
    assert!(msg.contains("3.6 TiB") && msg.contains("available"), "{msg}");

    // A claim that fits is read as far as it goes, plus the probe for extra
    // data (and buffering): the stream does not run on.
    let header = npy_bytes("<f4", false, "(1000, 10)", &[]);
    let mut zeros = Zeros(0);
    match npy::read_2d_from(std::io::Read::chain(&header[..], &mut zeros), name) {
        Err(Error::BadFile { why, .. }) => assert!(why.contains("extra bytes after the 40000 data bytes"), "{why}"),
        other => panic!("expected BadFile, got {other:?}"),
    }
    assert!(zeros.0 <= 40_000 + 16_384, "read {} bytes", zeros.0);
}

/// The same through a real pipe and the command line (`--memories /dev/stdin`).
#[test]
fn the_command_refuses_a_huge_claim_on_stdin_at_once() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q.npy");
    npy::write_f32_2d(&q, 1, 2, &[1.0, 0.0]).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hopfield-gpu"))
        .args(["retrieve", "--memories", "/dev/stdin", "--queries", q.to_str().unwrap(), "--beta", "1", "--out"])
        .arg(dir.path().join("z.npy"))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let header = npy_bytes("<f4", false, "(1000000, 1000000)", &[]);
        let zeros = vec![0u8; 1 << 16];
        if stdin.write_all(&header).is_err() {
            return 0u64;
        }
        // Until the reader goes away (a broken pipe), or 1 GiB: the old
        // reader would have taken all of it, and more.
        let mut sent = 0u64;
        while sent < 1 << 30 && stdin.write_all(&zeros).is_ok() {
            sent += zeros.len() as u64;
        }
        sent
    });
    let out = child.wait_with_output().unwrap();
    let sent = feeder.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("/dev/stdin") && err.contains("memory available"), "{err}");
    assert!(sent < 1 << 30, "the command read {sent} bytes of an endless stream");
}

/// The names in `dir`, sorted: what a failed write must leave as it was.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Issue 8 §6.2: writes go to a temporary file that is renamed over the
/// target only once complete. A write that fails at the last step (the
/// target is a directory, so the rename fails) leaves nothing behind. (The
/// regression test proper is the next one.)
#[test]
fn a_failed_write_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("z.npy");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("inside"), b"keep").unwrap();
    match npy::write_f32_2d(&target, 2, 2, &[1.0; 4]) {
        Err(Error::Io { path, .. }) => assert_eq!(path, target),
        other => panic!("expected Io, got {other:?}"),
    }
    assert_eq!(listing(dir.path()), ["z.npy"], "no temporary file left beside the target");
    assert_eq!(std::fs::read(target.join("inside")).unwrap(), b"keep");

    // A successful write replaces an existing file whole, and leaves no
    // temporary file either.
    let file = dir.path().join("e.npy");
    std::fs::write(&file, [b'x'; 300]).unwrap();
    npy::write_f32_1d(&file, &[2.0]).unwrap();
    let (_, raw) = split_written(&file);
    assert_eq!(raw, 2.0f32.to_le_bytes());
    assert_eq!(listing(dir.path()), ["e.npy", "z.npy"]);

    // Staged files stay invisible until committed; dropped, they vanish.
    let staged = npy::stage_f32_2d(&dir.path().join("a.npy"), 1, 2, &[1.0, 2.0]).unwrap();
    assert_eq!(staged.path(), dir.path().join("a.npy"));
    assert!(!dir.path().join("a.npy").exists());
    drop(staged);
    assert_eq!(listing(dir.path()), ["e.npy", "z.npy"]);
    npy::stage_i32_2d(&dir.path().join("s.npy"), 1, 1, &[3]).unwrap().commit().unwrap();
    assert_eq!(listing(dir.path()), ["e.npy", "s.npy", "z.npy"]);
}

/// A write cut short by the process's file-size limit (as a full disk cuts
/// it) leaves the existing output untouched and no partial file. The old
/// writer truncated the target first and left a valid-looking header over
/// truncated data.
#[cfg(unix)]
#[test]
fn a_write_cut_short_by_a_size_limit_leaves_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("z.npy");
    npy::write_f32_2d(&out, 1, 1, &[7.0]).unwrap();
    let before = std::fs::read(&out).unwrap();
    // A child with a 1 KiB file-size limit (SIGXFSZ ignored, so the write
    // fails with EFBIG instead of killing it) writes 4 KiB through the
    // library: the test binary itself, re-entered with an argument.
    let status = std::process::Command::new("bash")
        .args(["-c", "trap '' XFSZ; ulimit -f 1; exec \"$0\" --exact write_4k_for_size_limit_test --include-ignored"])
        .arg(std::env::current_exe().unwrap())
        .env("HOPFIELD_TEST_WRITE_TO", &out)
        .output()
        .expect("bash runs");
    let log = String::from_utf8_lossy(&status.stdout);
    assert!(log.contains("1 passed"), "the child ran the write: {log}");
    let after = std::fs::read(&out).unwrap();
    assert!(after == before, "the existing output was replaced by {} bytes", after.len());
    assert_eq!(listing(dir.path()), ["z.npy"], "no temporary file left");
}

/// Run only by `a_write_cut_short_by_a_size_limit_leaves_the_old_file`, in a
/// child with a small file-size limit: the write must fail with an I/O error.
#[test]
#[ignore = "a helper run by a_write_cut_short_by_a_size_limit_leaves_the_old_file"]
fn write_4k_for_size_limit_test() {
    let out = std::env::var_os("HOPFIELD_TEST_WRITE_TO").expect("run by its parent test");
    match npy::write_f32_2d(Path::new(&out), 32, 32, &[1.0; 1024]) {
        Err(Error::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(27), "EFBIG: {source}"),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

/// The atomic writers keep what the target is: through a symlink the file
/// it points to is replaced and the link stays; a pipe (a FIFO here, as
/// `/dev/stdout` in a shell pipeline) is written in place, not renamed over.
#[cfg(unix)]
#[test]
fn writes_follow_symlinks_and_stream_into_pipes() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let (real, link) = (dir.path().join("real.npy"), dir.path().join("link.npy"));
    std::fs::write(&real, b"old").unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    npy::write_f32_2d(&link, 1, 1, &[4.0]).unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link is kept");
    assert_eq!(npy::read_2d(&real).unwrap().data, [4.0]);

    let fifo = dir.path().join("pipe.npy");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    npy::write_f32_2d(&fifo, 1, 2, &[1.0, 2.0]).unwrap();
    let bytes = reader.join().unwrap();
    assert_eq!(&bytes[bytes.len() - 8..], [1.0f32, 2.0].map(f32::to_le_bytes).concat());
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the pipe is still a pipe");
    assert_eq!(listing(dir.path()), ["link.npy", "pipe.npy", "real.npy"]);
}
