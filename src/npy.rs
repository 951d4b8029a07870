//! Reading and writing NumPy `.npy` files, the library's file format for
//! memories, queries and results.
//!
//! Reading is strict: a file that is not exactly a C-order 2-D array (or,
//! through [`read_array`], an array of the ranks asked for) of
//! float32, float64 or uint8, with exactly as many data bytes as its shape
//! needs, is an [`Error::BadFile`] whose message names what was wrong. No input
//! file makes this module panic or allocate more than the file can fill, and
//! no input is read beyond what its header claims (plus one byte, to detect
//! extra data). A claim that cannot fit in the memory available
//! ([`crate::available_memory`]) is refused before any data is read, so a pipe whose
//! header claims terabytes fails at once instead of being read until the
//! process is killed.
//!
//! [`npyz`] parses the header and decodes the data. Before it sees the header,
//! `guard_header` rejects the few headers that would make npyz panic or take
//! minutes (see there); NumPy never writes such headers.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read};
use std::path::Path;

use npyz::{DType, TypeChar, TypeStr, WriterBuilder};

use crate::error::{Error, Result};

/// A 2-D array read from a `.npy` file, converted to f32, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Array2 {
    /// Number of rows (first axis). May be 0.
    pub rows: usize,
    /// Number of columns (second axis). May be 0.
    pub cols: usize,
    /// `rows * cols` values, row-major.
    pub data: Vec<f32>,
}

impl Array2 {
    /// Row `i` as a slice.
    ///
    /// # Panics
    /// If `i >= self.rows`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// The `.npy` magic string, `\x93NUMPY`.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The longest header NumPy itself reads without `allow_pickle=True`
/// (`numpy.lib.format._MAX_HEADER_SIZE`, NumPy >= 1.24). It also bounds what
/// we allocate for a header before we know the file is genuine.
const MAX_HEADER_LEN: usize = 10_000;

/// Deepest bracket nesting accepted in a header. A plain array's header nests
/// two deep (`{..., 'shape': (r, c)}`), a record dtype three deep (which we
/// reject too, but after npyz has parsed it and we can name it). The limit is
/// there because npyz's header parser (py_literal, a pest PEG grammar)
/// backtracks: each level of nesting multiplies its time by 2 to 3.5. Measured
/// with npyz 0.8.4 on an 8 kB header: 50 ms at depth 2, 0.36 s at depth 4,
/// 22 s at depth 8, 288 s at depth 10; at depth 3 a 10 kB header takes < 0.4 s.
const MAX_HEADER_DEPTH: usize = 3;

/// Read a 2-D `.npy` array of dtype float32, float64 or uint8 (little- or
/// big-endian), C order, converting every value to f32.
///
/// float64 values are rounded to the nearest f32; values beyond f32's range
/// become `±inf`, which the library's finite check then rejects with the
/// offending row and column (this function does not check finiteness).
///
/// An array with zero rows or columns is returned as such: emptiness is for
/// the caller to judge.
///
/// # Errors
/// [`Error::Io`] if the file cannot be opened or read; [`Error::BadFile`] if it
/// is not a `.npy` file, has a malformed header, is in Fortran order, is not
/// 2-D, has an unsupported dtype, or holds fewer or more data bytes than its
/// shape needs; [`Error::HostMemory`] if its shape, as f32, needs more memory
/// than is available.
pub fn read_2d(path: &Path) -> Result<Array2> {
    let file = File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    // The exact length of a regular file; none for a pipe, socket or device.
    let len = file.metadata().ok().filter(std::fs::Metadata::is_file).map(|m| m.len());
    read_from(BufReader::new(file), len, path, 2..=2).map(ArrayN::into_2d)
}

/// An array of any rank read from a `.npy` file, converted to f32, C order.
#[derive(Clone, Debug, PartialEq)]
pub struct ArrayN {
    /// The shape, outermost axis first.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<f32>,
}

impl ArrayN {
    fn into_2d(self) -> Array2 {
        Array2 { rows: self.shape[0], cols: self.shape[1], data: self.data }
    }
}

/// [`read_2d`] for an array whose rank lies in `ranks`: the Hopfield layers'
/// inputs are 3-D `[N, S, F]` (batch first) or 2-D `[S, F]`, their masks
/// 2-D `[N, S]` or 1-D `[S]`. Everything else is checked as [`read_2d`] checks it.
///
/// # Errors
/// As [`read_2d`], with the rank check for `ranks`.
pub fn read_array(path: &Path, ranks: std::ops::RangeInclusive<usize>) -> Result<ArrayN> {
    let file = File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let len = file.metadata().ok().filter(std::fs::Metadata::is_file).map(|m| m.len());
    read_from(BufReader::new(file), len, path, ranks)
}

/// [`read_2d`] from any reader (a pipe, a socket, bytes in memory), whose
/// length is not known in advance; `name` names it in errors.
///
/// At most the bytes the header claims, plus one to detect extra data, are
/// read, and a claim beyond the memory available is refused before any data
/// is read ([`crate::check_host_memory`]).
///
/// # Errors
/// As [`read_2d`], and [`Error::HostMemory`] for a shape whose f32 data would
/// not fit in the memory available.
pub fn read_2d_from(reader: impl Read, name: &Path) -> Result<Array2> {
    read_from(BufReader::new(reader), None, name, 2..=2).map(ArrayN::into_2d)
}

/// The reader behind [`read_2d`], [`read_2d_from`] and [`read_array`]; `len`
/// is the exact length of the input where it is known (a regular file);
/// `ranks` the ranks accepted.
fn read_from(
    mut reader: impl Read,
    len: Option<u64>,
    path: &Path,
    ranks: std::ops::RangeInclusive<usize>,
) -> Result<ArrayN> {
    let io_err = |source| Error::Io { path: path.to_path_buf(), source };
    let bad = |why: String| Error::BadFile { path: path.to_path_buf(), why };

    let prefix = read_header_bytes(&mut reader).map_err(|e| match e {
        HeaderError::Io(source) => io_err(source),
        HeaderError::Bad(why) => bad(why),
    })?;
    let header = npyz::NpyHeader::from_reader(&prefix[..])
        // py_literal's syntax errors span several lines (pest's caret display).
        .map_err(|e| bad(format!("bad .npy header: {}", one_line(&e.to_string()))))?;

    let shape = header.shape().to_vec();
    if header.order() == npyz::Order::Fortran {
        return Err(bad(format!(
            "array of shape {shape:?} is stored in Fortran (column-major) order; \
             save it in C order (numpy.ascontiguousarray)"
        )));
    }
    if !ranks.contains(&shape.len()) {
        let want = if ranks.start() == ranks.end() {
            format!("a {}-D array", ranks.start())
        } else {
            let all: Vec<String> = ranks.clone().map(|r| format!("{r}-D")).collect();
            format!("a {} array", all.join(" or "))
        };
        return Err(bad(format!("expected {want}, found shape {shape:?}")));
    }

    let dtype = header.dtype();
    let kind = match &dtype {
        DType::Plain(ts) => match (ts.type_char(), ts.size_field()) {
            (TypeChar::Float, 4) => Some(Kind::F32),
            (TypeChar::Float, 8) => Some(Kind::F64),
            (TypeChar::Uint, 1) => Some(Kind::U8),
            _ => None,
        },
        _ => None,
    };
    let Some(kind) = kind else {
        return Err(bad(format!("dtype {} is not supported: use float32, float64 or uint8", dtype_name(&dtype))));
    };

    // Sizes in u64 first: the shape comes from the file and may not fit usize.
    let too_big = || {
        bad(format!("shape {shape:?} of dtype {} needs more memory than this machine can address", dtype_name(&dtype)))
    };
    let count = shape.iter().try_fold(1u64, |acc, &n| acc.checked_mul(n)).ok_or_else(too_big)?;
    let data_bytes = count.checked_mul(kind.size()).ok_or_else(too_big)?;
    let dims: Option<Vec<usize>> = shape.iter().map(|&n| usize::try_from(n).ok()).collect();
    let (Some(dims), Ok(count)) = (dims, usize::try_from(count)) else {
        return Err(too_big());
    };
    if count.checked_mul(size_of::<f32>()).is_none() {
        return Err(too_big());
    }
    let needed = prefix.len() as u64 + data_bytes;
    // A regular file's length is known: a short or long one is refused
    // before its data is read.
    match len {
        Some(len) if len < needed => {
            return Err(bad(format!(
                "file ends after {} of {data_bytes} data bytes (shape {shape:?}, dtype {})",
                len - prefix.len() as u64,
                dtype_name(&dtype)
            )));
        }
        Some(len) if len > needed => return Err(bad(extra_bytes(Some(len - needed), data_bytes, &shape, &dtype))),
        _ => {}
    }
    // The data read comes to `count` f32 values, whatever the input: refuse
    // before reading when that cannot fit (a pipe claiming terabytes would
    // otherwise be read until the process is killed).
    crate::host::check_allocation(
        || format!("{}: shape {shape:?} (as f32)", path.display()),
        (count as u64).checked_mul(size_of::<f32>() as u64),
    )?;

    // Never trust the header for an allocation: reserve at most what the file
    // can hold, so a 100-byte file claiming 10^12 elements fails on reading,
    // not on allocating. Where the length is unknown the vector grows as data
    // arrives.
    let capacity = len.unwrap_or(0).saturating_sub(prefix.len() as u64) / kind.size();
    let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).min(count);

    let mut counted = Counting { inner: reader, bytes: 0 };
    let npy = npyz::NpyFile::with_header(header, &mut counted);
    let decoded = match kind {
        Kind::F32 => decode(npy, capacity, |v: f32| v),
        // `as` rounds to nearest and saturates to ±inf, which is what we document.
        Kind::F64 => decode(npy, capacity, |v: f64| v as f32),
        Kind::U8 => decode(npy, capacity, |v: u8| f32::from(v)),
    };
    let data = match decoded {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(bad(format!(
                "file ends after {} of {data_bytes} data bytes (shape {shape:?}, dtype {})",
                counted.bytes,
                dtype_name(&dtype)
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(bad(format!("cannot decode data: {e}")));
        }
        Err(e) => return Err(io_err(e)),
    };

    // NumPy ignores bytes after the data; we refuse them, as a file with the
    // wrong length more likely has a wrong header than a harmless appendix.
    let mut probe = Vec::with_capacity(1);
    counted.inner.take(1).read_to_end(&mut probe).map_err(io_err)?;
    if !probe.is_empty() {
        return Err(bad(extra_bytes(None, data_bytes, &shape, &dtype)));
    }

    Ok(ArrayN { shape: dims, data })
}

/// The message for data beyond what the shape needs (`extra` bytes of it,
/// where known).
fn extra_bytes(extra: Option<u64>, data_bytes: u64, shape: &[u64], dtype: &DType) -> String {
    let size = match extra {
        Some(1) => "1 extra byte".to_string(),
        Some(n) => format!("{n} extra bytes"),
        None => "extra bytes".to_string(),
    };
    format!(
        "file has {size} after the {data_bytes} data bytes that shape {shape:?} of dtype {} needs",
        dtype_name(dtype)
    )
}

/// Write f32 data as a 2-D C-order `.npy` file (version 1.0 header, dtype
/// `<f4`), replacing any existing file atomically (every writer here does:
/// on failure `path` is left as it was and no partial file remains).
///
/// # Errors
/// [`Error::ShapeMismatch`] if `data.len() != rows * cols`; [`Error::Io`] if the
/// file cannot be created or written.
pub fn write_f32_2d(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<()> {
    write_2d(path, rows, cols, data, "<f4")
}

/// Write f32 data as a 1-D `.npy` file (version 1.0 header, dtype `<f4`).
///
/// # Errors
/// [`Error::Io`] if the file cannot be created or written.
pub fn write_f32_1d(path: &Path, data: &[f32]) -> Result<()> {
    write_nd(path, &[data.len() as u64], data, "<f4")
}

/// Write i32 data as a 2-D C-order `.npy` file (dtype `<i4`), as used for
/// support indices with `-1` for padding.
///
/// # Errors
/// [`Error::ShapeMismatch`] if `data.len() != rows * cols`; [`Error::Io`] if the
/// file cannot be created or written.
pub fn write_i32_2d(path: &Path, rows: usize, cols: usize, data: &[i32]) -> Result<()> {
    write_2d(path, rows, cols, data, "<i4")
}

/// Write i64 data as a 2-D C-order `.npy` file (dtype `<i8`), for indices
/// that may exceed `i32` or for tools that expect NumPy's default `int64`.
///
/// # Errors
/// [`Error::ShapeMismatch`] if `data.len() != rows * cols`; [`Error::Io`] if the
/// file cannot be created or written.
pub fn write_i64_2d(path: &Path, rows: usize, cols: usize, data: &[i64]) -> Result<()> {
    write_2d(path, rows, cols, data, "<i8")
}

/// Write i32 data as a 1-D `.npy` file (dtype `<i4`), e.g. iterations per query.
///
/// # Errors
/// [`Error::Io`] if the file cannot be created or written.
pub fn write_i32_1d(path: &Path, data: &[i32]) -> Result<()> {
    write_nd(path, &[data.len() as u64], data, "<i4")
}

/// Write u32 data as a 1-D `.npy` file (dtype `<u4`).
///
/// # Errors
/// [`Error::Io`] if the file cannot be created or written.
pub fn write_u32_1d(path: &Path, data: &[u32]) -> Result<()> {
    write_nd(path, &[data.len() as u64], data, "<u4")
}

/// The element types [`read_2d`] accepts.
#[derive(Clone, Copy)]
enum Kind {
    F32,
    F64,
    U8,
}

impl Kind {
    /// Bytes per element.
    fn size(self) -> u64 {
        match self {
            Kind::F32 => 4,
            Kind::F64 => 8,
            Kind::U8 => 1,
        }
    }
}

/// Decode every element of `npy` as `T` and convert it to f32.
fn decode<T: npyz::Deserialize, R: Read>(
    npy: npyz::NpyFile<R>,
    capacity: usize,
    convert: impl Fn(T) -> f32,
) -> io::Result<Vec<f32>> {
    // The caller matched the dtype to `T`, so this cannot fail; map it anyway
    // rather than unwrap on a path that reads user files.
    let values = npy.data::<T>().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut out = Vec::with_capacity(capacity);
    for value in values {
        out.push(convert(value?));
    }
    Ok(out)
}

/// A reader that counts the bytes it has delivered, so that a short file can
/// be reported as "ends after N of M bytes".
struct Counting<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Why the raw header could not be read.
enum HeaderError {
    Io(io::Error),
    Bad(String),
}

impl From<io::Error> for HeaderError {
    fn from(e: io::Error) -> Self {
        HeaderError::Io(e)
    }
}

/// Read the magic string, version, header length and header text, check them,
/// and return all of those bytes for npyz to parse.
fn read_header_bytes(reader: &mut impl Read) -> std::result::Result<Vec<u8>, HeaderError> {
    let mut prefix = Vec::with_capacity(128);
    reader.by_ref().take(8).read_to_end(&mut prefix)?;
    if prefix.len() < MAGIC.len() || prefix[..MAGIC.len()] != MAGIC[..] {
        return Err(HeaderError::Bad("not a NumPy .npy file (bad magic)".into()));
    }
    if prefix.len() < 8 {
        return Err(HeaderError::Bad(format!("file ends after {} bytes, inside the .npy header", prefix.len())));
    }
    let len_bytes = match (prefix[6], prefix[7]) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        (major, minor) => {
            return Err(HeaderError::Bad(format!(
                "unsupported .npy format version {major}.{minor} (known: 1.0, 2.0, 3.0)"
            )));
        }
    };
    reader.by_ref().take(len_bytes).read_to_end(&mut prefix)?;
    let len_field = &prefix[8..];
    if len_field.len() < len_bytes as usize {
        return Err(HeaderError::Bad(format!("file ends after {} bytes, inside the .npy header", prefix.len())));
    }
    // Little-endian u16 or u32, per the format specification.
    let header_len = len_field.iter().rev().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    if header_len > MAX_HEADER_LEN {
        return Err(HeaderError::Bad(format!(
            "header is {header_len} bytes long, more than the {MAX_HEADER_LEN} NumPy itself accepts"
        )));
    }
    let start = prefix.len();
    reader.by_ref().take(header_len as u64).read_to_end(&mut prefix)?;
    let text = &prefix[start..];
    if text.len() < header_len {
        return Err(HeaderError::Bad(format!("file ends after {} of {header_len} header bytes", text.len())));
    }
    guard_header(text).map_err(|why| HeaderError::Bad(format!("bad .npy header: {why}")))?;
    Ok(prefix)
}

/// Reject the headers that would make npyz 0.8 panic or take minutes, before
/// it parses them. NumPy writes none of them.
///
/// - npyz multiplies the dimensions of `shape` (for the element count and the
///   strides) with unchecked `u64` arithmetic, which panics on overflow in
///   builds with overflow checks. So every integer in the header must be plain
///   decimal (which is all NumPy writes, and which this scan can evaluate),
///   and the nonzero integers directly inside any one bracket must have a
///   product that fits in `u64`: that covers `shape` wherever it sits, and
///   every partial product of its dimensions.
/// - npyz's parser takes time exponential in the nesting depth: nesting is
///   limited to [`MAX_HEADER_DEPTH`].
///
/// Anything else malformed is left to npyz, which reports it as an error.
fn guard_header(text: &[u8]) -> std::result::Result<(), String> {
    // One running product per open bracket.
    let mut products: Vec<u64> = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        match b {
            b'\'' | b'"' => {
                i = skip_string(text, i);
                continue;
            }
            b'(' | b'[' | b'{' => {
                if products.len() == MAX_HEADER_DEPTH {
                    return Err(format!("brackets nest deeper than {MAX_HEADER_DEPTH}"));
                }
                products.push(1);
            }
            b')' | b']' | b'}' => {
                products.pop().ok_or_else(|| format!("unbalanced '{}'", char::from(b)))?;
            }
            b'0'..=b'9' | b'+' | b'-' | b'.' => {
                let end = text[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || b"_.+-".contains(c)))
                    .map_or(text.len(), |n| i + n);
                let token = &text[i..end];
                let shown = String::from_utf8_lossy(token);
                if !token.iter().all(u8::is_ascii_digit) {
                    return Err(format!("{shown:?} is not a plain decimal integer"));
                }
                let value: u64 = std::str::from_utf8(token)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("{shown} does not fit in 64 bits"))?;
                if let Some(product) = products.last_mut() {
                    if value != 0 {
                        *product = product
                            .checked_mul(value)
                            .ok_or_else(|| format!("dimensions multiply past 2^64 elements (at {shown})"))?;
                    }
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Index just past the Python string literal that opens at `text[start]`
/// (a quote; short or triple-quoted, with backslash escapes), or `text.len()`
/// if it is unterminated (npyz then reports the error).
fn skip_string(text: &[u8], start: usize) -> usize {
    let quote = text[start];
    let triple = text[start..].starts_with(&[quote; 3]);
    let delim_len = if triple { 3 } else { 1 };
    let mut i = start + delim_len;
    while i < text.len() {
        if text[i] == b'\\' {
            i += 2;
        } else if text[i] == quote && (!triple || text[i..].starts_with(&[quote; 3])) {
            return i + delim_len;
        } else {
            i += 1;
        }
    }
    text.len()
}

/// `text` with every run of whitespace, newlines included, made one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The dtype as NumPy spells it (`<f4`, `|u1`, `[('a', '<f4'), ]`), for messages.
fn dtype_name(dtype: &DType) -> String {
    match dtype {
        DType::Plain(ts) => ts.to_string(),
        other => other.descr(),
    }
}

/// Check the shape of 2-D data, then write it.
fn write_2d<T: npyz::Serialize>(path: &Path, rows: usize, cols: usize, data: &[T], dtype: &'static str) -> Result<()> {
    check_2d(path, rows, cols, data.len())?;
    write_nd(path, &[rows as u64, cols as u64], data, dtype)
}

/// `len` values for a `rows x cols` array bound for `path`.
fn check_2d(path: &Path, rows: usize, cols: usize, len: usize) -> Result<()> {
    let expected = rows.checked_mul(cols);
    if expected != Some(len) {
        return Err(Error::ShapeMismatch {
            what: format!("values given for {} vs rows x cols = {rows} x {cols}", path.display()),
            expected: expected.unwrap_or(usize::MAX),
            got: len,
        });
    }
    Ok(())
}

/// Write `data` (whose length the caller has checked against `shape`) as a
/// C-order `.npy` file of the given little-endian dtype, atomically: staged
/// ([`stage_nd`]), then committed.
fn write_nd<T: npyz::Serialize>(path: &Path, shape: &[u64], data: &[T], dtype: &'static str) -> Result<()> {
    stage_nd(path, shape, data, dtype)?.commit()
}

/// A complete output file, written and synced under a temporary name beside
/// its target, not yet visible there. [`Staged::commit`] renames it over the
/// target; dropping it instead deletes it and leaves the target as it was.
///
/// Staging every output of a run before committing any lets a run that fails
/// on its third file leave the first two untouched too.
///
/// A target that exists and is neither a regular file nor a directory (a
/// pipe, a terminal, `/dev/null`, `/dev/stdout`) cannot be renamed over: its
/// bytes are kept in memory and written to it in place on commit. A symlink
/// to a regular file is followed, so the link survives and its target is
/// replaced.
#[derive(Debug)]
pub struct Staged {
    inner: StagedInner,
    path: std::path::PathBuf,
}

#[derive(Debug)]
enum StagedInner {
    /// A temporary file in `target`'s directory.
    File { tmp: tempfile::NamedTempFile, target: std::path::PathBuf },
    /// The encoded file, for a stream target.
    Stream(Vec<u8>),
}

impl Staged {
    /// Make the staged file the target's contents: a rename (atomic within
    /// a directory), or one write for a stream.
    ///
    /// # Errors
    /// [`Error::Io`] if the rename or write fails (the target is a
    /// directory, the directory went away); a temporary file is then removed.
    pub fn commit(self) -> Result<()> {
        let io_err = |source| Error::Io { path: self.path.clone(), source };
        match self.inner {
            StagedInner::File { tmp, target } => {
                tmp.persist(&target).map_err(|e| io_err(e.error))?;
            }
            StagedInner::Stream(bytes) => {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().write(true).open(&self.path).map_err(io_err)?;
                f.write_all(&bytes).and_then(|()| f.flush()).map_err(io_err)?;
            }
        }
        Ok(())
    }

    /// The path the file will have once committed.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// [`write_f32_2d`], staged: nothing is visible at `path` until
/// [`Staged::commit`].
///
/// # Errors
/// As [`write_f32_2d`].
pub fn stage_f32_2d(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<Staged> {
    check_2d(path, rows, cols, data.len())?;
    stage_nd(path, &[rows as u64, cols as u64], data, "<f4")
}

/// [`write_f32_1d`], staged.
///
/// # Errors
/// As [`write_f32_1d`].
pub fn stage_f32_1d(path: &Path, data: &[f32]) -> Result<Staged> {
    stage_nd(path, &[data.len() as u64], data, "<f4")
}

/// An f32 array of any shape (a Hopfield layer's `[N, L, F]` output), staged.
///
/// # Errors
/// [`Error::ShapeMismatch`] if `data.len()` is not the product of `shape`;
/// as [`write_f32_2d`] otherwise.
pub fn stage_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<Staged> {
    let expected = shape.iter().try_fold(1usize, |acc, &n| acc.checked_mul(n));
    if expected != Some(data.len()) {
        return Err(Error::ShapeMismatch {
            what: format!("values given for {} vs its shape {shape:?}", path.display()),
            expected: expected.unwrap_or(usize::MAX),
            got: data.len(),
        });
    }
    let shape: Vec<u64> = shape.iter().map(|&n| n as u64).collect();
    stage_nd(path, &shape, data, "<f4")
}

/// [`write_i32_2d`], staged.
///
/// # Errors
/// As [`write_i32_2d`].
pub fn stage_i32_2d(path: &Path, rows: usize, cols: usize, data: &[i32]) -> Result<Staged> {
    check_2d(path, rows, cols, data.len())?;
    stage_nd(path, &[rows as u64, cols as u64], data, "<i4")
}

/// The data go to a temporary file in the target's directory, which is
/// flushed and synced. A failure at any point (a full disk, a size limit)
/// removes the temporary file and leaves `path` as it was, so a failed run
/// never leaves a partial output nor harms an existing file. The new file
/// gets the permissions `File::create` would give a new file (0o666 less the
/// umask), not those of a file it replaces. Streams: see [`Staged`].
fn stage_nd<T: npyz::Serialize>(path: &Path, shape: &[u64], data: &[T], dtype: &'static str) -> Result<Staged> {
    let io_err = |source| Error::Io { path: path.to_path_buf(), source };
    let target = match std::fs::metadata(path) {
        // Through any symlinks, so that the rename replaces the file, not the link.
        Ok(m) if m.is_file() => std::fs::canonicalize(path).map_err(io_err)?,
        Ok(m) if !m.is_dir() => {
            let mut bytes = Vec::new();
            encode(&mut bytes, shape, data, dtype).map_err(io_err)?;
            return Ok(Staged { inner: StagedInner::Stream(bytes), path: path.to_path_buf() });
        }
        // New, or a directory (the rename then fails, naming it).
        _ => path.to_path_buf(),
    };
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".hopfield-gpu-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    // Dropping `tmp` on an early return deletes the temporary file.
    let tmp = builder.tempfile_in(dir).map_err(io_err)?;
    encode(BufWriter::new(tmp.as_file()), shape, data, dtype).map_err(io_err)?;
    // Errors a filesystem reports only on sync (quota, NFS) come out here,
    // before the rename makes the file visible.
    tmp.as_file().sync_all().map_err(io_err)?;
    Ok(Staged { inner: StagedInner::File { tmp, target }, path: path.to_path_buf() })
}

/// Encode `data` as a C-order `.npy` file of the given little-endian dtype.
fn encode<T: npyz::Serialize>(out: impl io::Write, shape: &[u64], data: &[T], dtype: &'static str) -> io::Result<()> {
    // Little-endian whatever the host, so files are byte-identical everywhere.
    let dtype: TypeStr = dtype.parse().expect("dtype strings in this file are valid");
    let mut writer = npyz::WriteOptions::new().dtype(DType::Plain(dtype)).shape(shape).writer(out).begin_nd()?;
    for value in data {
        writer.push(value)?;
    }
    // `finish` checks the element count and flushes; dropping would hide errors.
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_accepts_numpy_headers() {
        for h in [
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1797, 64), }",
            "{'descr': '|u1', 'fortran_order': False, 'shape': (0, 3), }",
            "{'descr': [('a', '<f4'), ('b', '|u1')], 'fortran_order': False, 'shape': (5,), }",
            "{\"descr\": \"<f8\", \"fortran_order\": True, \"shape\": ()}",
        ] {
            assert_eq!(guard_header(h.as_bytes()), Ok(()), "{h}");
        }
    }

    #[test]
    fn guard_rejects_overflowing_shapes() {
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }";
        assert!(guard_header(h.as_bytes()).is_err());
        // Zero dimensions do not hide an overflow in the strides.
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296), }";
        assert!(guard_header(h.as_bytes()).is_err());
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }";
        assert!(guard_header(h.as_bytes()).is_err());
        // Spellings that this scan cannot evaluate are refused, not trusted.
        for dim in ["0x100000000", "4_294_967_296", "-1", "1e3", "2+2"] {
            let h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dim}, 3), }}");
            assert!(guard_header(h.as_bytes()).is_err(), "{dim}");
        }
    }

    #[test]
    fn guard_rejects_deep_nesting_and_unbalanced_brackets() {
        let deep = format!("{}{}", "(".repeat(5000), ")".repeat(5000));
        assert!(guard_header(deep.as_bytes()).is_err());
        assert!(guard_header(b"{'x': [{'y': [1]}]}").is_err(), "four deep");
        assert!(guard_header(b"{'shape': (1, 2))}").is_err());
    }

    #[test]
    fn guard_skips_brackets_and_digits_inside_strings() {
        assert_eq!(guard_header(b"{'a(b[': 'x))', \"1e9\": '''it's (''', }"), Ok(()));
        assert_eq!(skip_string(b"'a\\'b' rest", 0), 6);
        assert_eq!(skip_string(b"'''a'b'''", 0), 9);
        assert_eq!(skip_string(b"'unterminated", 0), 13);
    }
}
