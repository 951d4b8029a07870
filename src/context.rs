//! The GPU context: one device and queue, with the caches every kernel shares
//! (compiled pipelines, pooled scratch buffers) and the plumbing to submit,
//! time and read back work. It is built either from an adapter the library
//! picks or from a `wgpu::Device` the caller already owns.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::config::cache::{self, CacheKey, TuneMode};
use crate::config::{DeviceCaps, KernelConfig};
use crate::error::{Error, GpuErrorKind, Resource, Result};
use crate::shaders::{Shader, SOURCE_HASH, WGPU_VERSION};

/// How to pick an adapter.
#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    /// Backends to consider. `None` honours the `WGPU_BACKEND` environment
    /// variable (e.g. `vulkan`, `metal`, `dx12`) and otherwise tries all.
    pub backends: Option<wgpu::Backends>,
    /// Case-insensitive substring of the adapter name (e.g. `"llvmpipe"`,
    /// `"H100"`). `None` honours `WGPU_ADAPTER_NAME`, else picks the fastest
    /// kind present (discrete > integrated > virtual > CPU).
    pub adapter_name: Option<String>,
    /// Pretend storage bindings can be at most this many bytes (clamped to
    /// the device's real limit). Tests use it to exercise the chunked paths on
    /// small problems; users never need it.
    pub max_binding_bytes: Option<u64>,
    /// The kernel configuration to run. `None`: the tuner's cached choice
    /// for this device, else the defaults table (`HOPFIELD_TUNE` decides,
    /// see [`TuneMode`]).
    pub config: Option<KernelConfig>,
    /// Build every kernel's shader module with wgpu's runtime checks
    /// (bounds checks, loop bounding, division checks), including the
    /// kernels whose indices the host proves in range. `None`: checked
    /// exactly when `HOPFIELD_CHECKED_SHADERS=1`.
    pub checked_shaders: Option<bool>,
    /// Where the tuner's cache lives. `None`: the user's cache directory
    /// (`$XDG_CACHE_HOME/hopfield-gpu/` or the platform's equivalent).
    pub cache_dir: Option<PathBuf>,
}

/// What the adapter is, as reported to users (`hopfield-gpu info`, `bench`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceReport {
    /// Adapter name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// Backend, e.g. "Vulkan".
    pub backend: String,
    /// Kind of device, e.g. "Cpu", "DiscreteGpu".
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// Whether GPU timestamps are used for timing.
    pub timestamps: bool,
    /// Largest storage binding in bytes.
    pub max_storage_binding: u64,
    /// Largest buffer in bytes.
    pub max_buffer: u64,
    /// Workgroup memory in bytes.
    pub max_workgroup_memory: u32,
    /// Subgroup sizes the adapter reports (min, max), and whether subgroup
    /// operations are enabled on the device.
    pub subgroup_sizes: (u32, u32),
    /// Whether subgroup operations are enabled.
    pub subgroups: bool,
    /// Whether f16 in shaders is enabled (f16 storage of memories).
    pub shader_f16: bool,
    /// Whether kernels run with wgpu's runtime checks on every module.
    pub checked_shaders: bool,
    /// The kernel configuration in use, in one line.
    pub config: String,
}

/// Key of the pipeline cache: kernel file, entry point, override constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: Shader,
    entry: &'static str,
    /// Override constants as (name, f64 bits), sorted by name.
    constants: Vec<(&'static str, u64)>,
}

/// Scratch buffers by (size class, usage), reused across calls (as vello's
/// `ResourcePool`): retrieval allocates the same shapes again and again.
#[derive(Default)]
struct BufferPool {
    free: HashMap<(u64, wgpu::BufferUsages), Vec<wgpu::Buffer>>,
}

/// Scratch buffers of one call, returned to the context's pool when the
/// guard drops (RAII, on every path, errors included).
///
/// A pooled guard must only drop once the GPU is done with its buffers: the
/// host-side retrieval holds it across its submission and wait. A detached
/// guard ([`Scratch::detached`], for work recorded into a caller's encoder
/// that is submitted later) drops its buffers instead; wgpu keeps them alive
/// while recorded commands still use them.
pub(crate) struct Scratch<'c> {
    ctx: &'c Context,
    held: Vec<wgpu::Buffer>,
    recycle: bool,
}

impl<'c> Scratch<'c> {
    /// Buffers that go back to the pool on drop.
    pub(crate) fn pooled(ctx: &'c Context) -> Self {
        Scratch { ctx, held: Vec::new(), recycle: true }
    }

    /// Buffers that are dropped, not pooled (recorded work runs later).
    pub(crate) fn detached(ctx: &'c Context) -> Self {
        Scratch { ctx, held: Vec::new(), recycle: false }
    }

    /// A buffer of at least `size` bytes from the pool.
    pub(crate) fn buffer(&mut self, size: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        let b = self.ctx.acquire(size, usage)?;
        self.held.push(b.clone());
        Ok(b)
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if self.recycle {
            self.ctx.release(self.held.drain(..));
        }
    }
}

/// Device, queue, limits and caches. Cheap to share behind an `Arc`; all
/// methods take `&self`.
pub struct Context {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    timestamps: bool,
    timestamp_period_ns: f32,
    max_binding: u64,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    modules: Mutex<HashMap<Shader, wgpu::ShaderModule>>,
    pool: Mutex<BufferPool>,
    /// 16 bytes bound where a kernel's optional output is switched off.
    placeholder: wgpu::Buffer,
    /// Why the device was lost, for a device this context created (the
    /// caller's own device keeps its own device-lost callback).
    lost: Arc<Mutex<Option<String>>>,
    /// What the device offers that configurations depend on.
    caps: DeviceCaps,
    /// The kernel configuration every retrieval starts from (a retrieval
    /// takes a snapshot, so a concurrent `set_config` never mixes two).
    config: RwLock<Arc<KernelConfig>>,
    /// Every module built with runtime checks.
    checked: bool,
    /// Features the adapter offers (the device enables some of them).
    adapter_features: wgpu::Features,
    /// Cooperative-matrix shapes the adapter reports (none used yet).
    cooperative_matrix: Vec<wgpu::CooperativeMatrixProperties>,
    cache_dir: Option<PathBuf>,
    tune_mode: TuneMode,
}

// Shared across threads: every call captures its own GPU errors with error
// scopes (thread-local in wgpu with `std`), and the caches are behind locks.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Context>();
};

/// Bytes written to the device per submission when uploading memories.
pub(crate) const UPLOAD_CHUNK: usize = 64 << 20;

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("adapter", &self.info.name).finish_non_exhaustive()
    }
}

/// Every adapter the instance can see for the given backends (`None`:
/// `WGPU_BACKEND`, else all).
pub fn list_adapters(backends: Option<wgpu::Backends>) -> Result<Vec<wgpu::AdapterInfo>> {
    let backends = instance_backends(backends)?;
    let instance = make_instance(backends);
    Ok(pollster::block_on(instance.enumerate_adapters(backends)).iter().map(|a| a.get_info()).collect())
}

/// The backends asked for, else those `WGPU_BACKEND` names (comma-separated:
/// vulkan, metal, dx12, gl, webgpu), else all. An unknown name is an error
/// naming it (wgpu itself would silently drop it and find no adapter).
fn instance_backends(backends: Option<wgpu::Backends>) -> Result<wgpu::Backends> {
    if let Some(b) = backends {
        return Ok(b);
    }
    let Ok(env) = std::env::var("WGPU_BACKEND") else {
        return Ok(wgpu::Backends::all());
    };
    let mut all = wgpu::Backends::empty();
    for name in env.split(',') {
        let b = wgpu::Backends::from_comma_list(name);
        if b.is_empty() {
            return Err(Error::invalid(
                "WGPU_BACKEND",
                &env,
                format!("unknown backend {:?}: use vulkan, metal, dx12 or gl (comma-separated)", name.trim()),
            ));
        }
        all |= b;
    }
    Ok(all)
}

fn make_instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// A wgpu error as an [`Error::Gpu`], on one line.
fn gpu_error(e: wgpu::Error) -> Error {
    let kind = match &e {
        wgpu::Error::OutOfMemory { .. } => GpuErrorKind::OutOfMemory,
        wgpu::Error::Validation { .. } => GpuErrorKind::Validation,
        wgpu::Error::Internal { .. } => GpuErrorKind::Internal,
    };
    Error::gpu(kind, e)
}

/// The tuner's cache key for an adapter and the kernels of this build.
fn cache_key(info: &wgpu::AdapterInfo) -> CacheKey {
    CacheKey {
        backend: format!("{:?}", info.backend),
        vendor: info.vendor,
        device: info.device,
        name: info.name.clone(),
        driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
        wgpu: WGPU_VERSION.to_string(),
        shaders: format!("{SOURCE_HASH:016x}"),
    }
}

fn type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

impl Context {
    /// Pick an adapter and create a device on it, asking for the adapter's
    /// own limits rather than wgpu's conservative defaults (lavapipe's
    /// defaults cap workgroup memory at 16 KiB where the device has 32 KiB).
    pub fn new(opts: &ContextOptions) -> Result<Self> {
        let backends = instance_backends(opts.backends)?;
        let instance = make_instance(backends);
        let filter =
            opts.adapter_name.clone().or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok().filter(|s| !s.is_empty()));
        let adapters = pollster::block_on(instance.enumerate_adapters(backends));
        let seen: Vec<String> =
            adapters.iter().map(|a| format!("{} ({:?})", a.get_info().name, a.get_info().backend)).collect();
        let chosen = adapters
            .into_iter()
            .filter(|a| match &filter {
                Some(f) => a.get_info().name.to_lowercase().contains(&f.to_lowercase()),
                None => true,
            })
            // GL adapters lack compute features we rely on; prefer real compute APIs.
            .min_by_key(|a| (a.get_info().backend == wgpu::Backend::Gl, type_rank(a.get_info().device_type)))
            .ok_or_else(|| Error::NoAdapter {
                filter: filter.clone(),
                reason: if seen.is_empty() {
                    format!(
                        "none on backends {backends:?} (WGPU_BACKEND narrows them): install a Vulkan driver \
                         (e.g. mesa-vulkan-drivers for lavapipe) and the loader (libvulkan1)"
                    )
                } else {
                    format!("adapters present: {}", seen.join(", "))
                },
            })?;
        let info = chosen.get_info();
        // Timestamps for timing; subgroups and shader-f16 where the adapter
        // has them (the kernels' subgroup and f16 variants need them enabled).
        let wanted = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16;
        let adapter_features = chosen.features();
        let features = adapter_features & wanted;
        let cooperative_matrix = if adapter_features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            chosen.cooperative_matrix_properties()
        } else {
            Vec::new()
        };
        let (device, queue) = pollster::block_on(chosen.request_device(&wgpu::DeviceDescriptor {
            label: Some("hopfield-gpu"),
            required_features: features,
            required_limits: chosen.limits(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::DeviceRequest { adapter: info.name.clone(), reason: e.to_string() })?;
        let lost = Arc::new(Mutex::new(None::<String>));
        // Our own device: errors outside any call's scope (none of ours) are
        // logged rather than panicking, and a loss is remembered.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| log::error!("uncaptured wgpu error: {e}")));
        let sink = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert_with(|| format!("device lost ({reason:?}): {msg}"));
            }
        });
        Self::build(device, queue, Some(info), opts, lost, adapter_features, cooperative_matrix)
    }

    /// Wrap a device and queue the caller already owns (a graphics app's).
    /// Nothing is copied; the library's buffers live on that device, and the
    /// caller's buffers can be used directly (see [`crate::MemoryBank::from_buffer`]
    /// and [`Context::encode_retrieve`]).
    ///
    /// The device's handlers stay the caller's: every library call captures
    /// its own errors with error scopes and returns them as [`Error::Gpu`].
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        Self::from_device_with(device, queue, &ContextOptions::default())
    }

    /// [`Context::from_device`] with options (the configuration, checked
    /// shaders, the cache; the adapter fields are ignored). The kernels use
    /// the features the device was created with: subgroup and f16 kernels
    /// need `Features::SUBGROUP` / `Features::SHADER_F16` enabled on it.
    pub fn from_device_with(device: wgpu::Device, queue: wgpu::Queue, opts: &ContextOptions) -> Result<Self> {
        let features = device.features();
        Self::build(device, queue, None, opts, Arc::default(), features, Vec::new())
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: Option<wgpu::AdapterInfo>,
        opts: &ContextOptions,
        lost: Arc<Mutex<Option<String>>>,
        adapter_features: wgpu::Features,
        cooperative_matrix: Vec<wgpu::CooperativeMatrixProperties>,
    ) -> Result<Self> {
        let info = info.unwrap_or_else(|| device.adapter_info());
        let limits = device.limits();
        let features = device.features();
        let timestamps = features.contains(wgpu::Features::TIMESTAMP_QUERY);
        let caps = DeviceCaps {
            vendor: info.vendor,
            device_type: format!("{:?}", info.device_type),
            workgroup_bytes: limits.max_compute_workgroup_storage_size,
            invocations: limits.max_compute_invocations_per_workgroup,
            workgroup_size_x: limits.max_compute_workgroup_size_x,
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min: info.subgroup_min_size,
            subgroup_max: info.subgroup_max_size,
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            cooperative_matrix: !cooperative_matrix.is_empty(),
        };
        let checked = match opts.checked_shaders {
            Some(c) => c,
            None => std::env::var("HOPFIELD_CHECKED_SHADERS").is_ok_and(|v| v.trim() == "1"),
        };
        let tune_mode = TuneMode::from_env()?;
        let cache_dir = opts.cache_dir.clone().or_else(cache::default_dir);
        let placeholder = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("hopfield placeholder"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let real_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        // Bindings are kept a multiple of 16 bytes (vec4 loads) and of the
        // offset alignment, so a chunk boundary never splits a row badly.
        let max_binding = opts.max_binding_bytes.map_or(real_binding, |b| b.min(real_binding)) & !255;
        let key = cache_key(&info);
        let config = match &opts.config {
            Some(c) => {
                c.check(&caps).map_err(|why| {
                    Error::unsupported("config", None, format!("configuration {:?} cannot run here: {why}", c.name))
                })?;
                c.clone()
            }
            None => match (tune_mode, &cache_dir) {
                (TuneMode::Cache, Some(dir)) => cache::load(dir, &key)
                    .map(|e| e.config)
                    .filter(|c| c.check(&caps).is_ok())
                    .unwrap_or_else(|| KernelConfig::defaults(&caps)),
                _ => KernelConfig::defaults(&caps),
            },
        };
        Ok(Context {
            timestamp_period_ns: queue.get_timestamp_period(),
            device,
            queue,
            info,
            limits,
            timestamps,
            max_binding,
            pipelines: Mutex::default(),
            modules: Mutex::default(),
            pool: Mutex::default(),
            placeholder,
            lost,
            caps,
            config: RwLock::new(Arc::new(config)),
            checked,
            adapter_features,
            cooperative_matrix,
            cache_dir,
            tune_mode,
        })
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The adapter's description.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The device's limits (the adapter's own, as requested).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Largest storage binding the engine will use, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.max_binding
    }

    /// Whether kernel times come from GPU timestamps (else wall time).
    pub fn has_timestamps(&self) -> bool {
        self.timestamps
    }

    /// A summary for reports.
    pub fn report(&self) -> DeviceReport {
        DeviceReport {
            name: self.info.name.clone(),
            backend: format!("{:?}", self.info.backend),
            device_type: format!("{:?}", self.info.device_type),
            driver: format!("{} {}", self.info.driver, self.info.driver_info).trim().to_string(),
            timestamps: self.timestamps,
            max_storage_binding: self.limits.max_storage_buffer_binding_size,
            max_buffer: self.limits.max_buffer_size,
            max_workgroup_memory: self.limits.max_compute_workgroup_storage_size,
            subgroup_sizes: (self.caps.subgroup_min, self.caps.subgroup_max),
            subgroups: self.caps.subgroups,
            shader_f16: self.caps.shader_f16,
            checked_shaders: self.checked,
            config: self.config().to_string(),
        }
    }

    /// What the device offers that kernel configurations depend on.
    pub fn caps(&self) -> &DeviceCaps {
        &self.caps
    }

    /// Features the adapter offers (not all are enabled on the device).
    pub fn adapter_features(&self) -> wgpu::Features {
        self.adapter_features
    }

    /// Cooperative-matrix shapes the adapter reports, where it reports any
    /// (`Features::EXPERIMENTAL_COOPERATIVE_MATRIX`); no kernel uses them yet.
    pub fn cooperative_matrix_properties(&self) -> &[wgpu::CooperativeMatrixProperties] {
        &self.cooperative_matrix
    }

    /// The kernel configuration retrievals use now.
    pub fn config(&self) -> Arc<KernelConfig> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Use `config` from now on (retrievals already running keep theirs).
    /// A configuration the device cannot run (too much workgroup memory,
    /// subgroups it lacks) is refused.
    pub fn set_config(&self, config: KernelConfig) -> Result<()> {
        config.check(&self.caps).map_err(|why| match why.contains("subgroup operations") {
            true => Error::MissingFeature {
                feature: "Features::SUBGROUP",
                needed_for: format!("configuration {:?}", config.name),
            },
            false => {
                Error::unsupported("config", None, format!("configuration {:?} cannot run here: {why}", config.name))
            }
        })?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// Whether every module is built with runtime checks.
    pub fn checked_shaders(&self) -> bool {
        self.checked
    }

    /// The tuner's cache key for this device and these kernels.
    pub fn cache_key(&self) -> CacheKey {
        cache_key(&self.info)
    }

    /// Where the tuner's cache lives (`None`: nowhere, the platform has no cache directory).
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache_dir.as_deref()
    }

    /// How the tuner's cache is used (`HOPFIELD_TUNE`).
    pub fn tune_mode(&self) -> TuneMode {
        self.tune_mode
    }

    /// Whether this is a CPU implementation (lavapipe, SwiftShader, WARP),
    /// where fewer, larger workgroups are better.
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Most loop iterations one shader invocation may run, where the driver
    /// caps them. llvmpipe (lavapipe) counts every loop iteration of an
    /// invocation against one limiter of 65535 and silently leaves the loop
    /// when it runs out (gallivm's `LP_MAX_TGSI_LOOP_ITERATIONS`, measured
    /// here on Mesa 22.3: results froze after ~508 memories at d = 64). The
    /// kernels cut their work so that no invocation comes near it; the
    /// budget leaves 25% headroom because the limiter's exact accounting
    /// (loop entries and exits) is not documented.
    pub(crate) fn loop_budget(&self) -> Option<usize> {
        self.info.name.to_lowercase().contains("llvmpipe").then_some(50_000)
    }

    /// Run `f` with this thread's wgpu errors captured: an error that wgpu
    /// reports for work `f` records or submits becomes an [`Error::Gpu`] of
    /// this call only (error scopes are per thread in wgpu with `std`, so
    /// another thread's failure never shows up here). A GPU error wins over
    /// the error `f` returned, which is usually its consequence.
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let result = f();
        // Innermost first, as scopes must be popped.
        let errors =
            [pollster::block_on(validation.pop()), pollster::block_on(internal.pop()), pollster::block_on(oom.pop())];
        if let Some(e) = errors.into_iter().flatten().next() {
            return Err(gpu_error(e));
        }
        self.check_lost()?;
        result
    }

    /// An [`Error::Gpu`] if this context's own device was lost.
    fn check_lost(&self) -> Result<()> {
        match self.lost.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(msg) => Err(Error::gpu(GpuErrorKind::DeviceLost, msg)),
            None => Ok(()),
        }
    }

    /// 16 bytes to bind where a kernel's optional output is switched off
    /// (the kernels never write it then).
    pub(crate) fn placeholder(&self) -> &wgpu::Buffer {
        &self.placeholder
    }

    /// The compute pipeline for `entry` in `shader` with the given override
    /// constants, compiled once per context. Layouts are derived from the
    /// shader (`layout: None`), so bind groups use `get_bind_group_layout(0)`.
    /// A pipeline that fails to compile is an error and is not cached.
    pub(crate) fn pipeline(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let mut sorted: Vec<_> = constants.iter().map(|&(k, v)| (k, v.to_bits())).collect();
        sorted.sort_unstable();
        let key = PipelineKey { shader, entry, constants: sorted };
        if let Some(p) = self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(p.clone());
        }
        let pipeline = self.scoped(|| {
            if shader.subgroup() && !self.caps.subgroups {
                return Err(Error::MissingFeature {
                    feature: "Features::SUBGROUP",
                    needed_for: format!("kernel {}", shader.name()),
                });
            }
            if shader.f16() && !self.caps.shader_f16 {
                return Err(Error::MissingFeature {
                    feature: "Features::SHADER_F16",
                    needed_for: format!("kernel {}", shader.name()),
                });
            }
            let module = {
                let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
                modules.entry(shader).or_insert_with(|| self.module(shader)).clone()
            };
            Ok(self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    // Every kernel writes its workgroup memory before reading it.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            }))
        })?;
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// The shader module of `shader`: without runtime checks where the
    /// kernel is trusted (its `// #trusted` line says why its indices are in
    /// range) and checked shaders were not asked for.
    fn module(&self, shader: Shader) -> wgpu::ShaderModule {
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(shader.name()),
            source: wgpu::ShaderSource::Wgsl(shader.source().into()),
        };
        if shader.trusted() && !self.checked {
            // SAFETY: the kernels marked trusted index only in range (each
            // says why in its `// #trusted` line; the host validates the
            // shapes and sizes the buffers those arguments rely on), every
            // loop they run ends (trip counts are overrides or validated
            // parameters), and no divisor is zero. The checks wgpu would add
            // cost 1.5-2x on llvmpipe.
            unsafe { self.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
        } else {
            self.device.create_shader_module(desc)
        }
    }

    /// A scratch buffer of at least `size` bytes from the pool (through a
    /// [`Scratch`] guard, which gives it back).
    fn acquire(&self, size: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        let size = size.max(16);
        if size > self.limits.max_buffer_size {
            return Err(Error::limit("a scratch buffer", Resource::BufferBytes, size, self.limits.max_buffer_size));
        }
        // Power-of-two size classes, but never past the device limit.
        let class = size.next_power_of_two().min(self.limits.max_buffer_size.max(size));
        let class = if class > self.max_binding { size.next_multiple_of(256) } else { class };
        if let Some(b) =
            self.pool.lock().unwrap_or_else(|p| p.into_inner()).free.get_mut(&(class, usage)).and_then(Vec::pop)
        {
            return Ok(b);
        }
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("hopfield scratch"),
            size: class,
            usage,
            mapped_at_creation: false,
        }))
    }

    /// Return scratch buffers to the pool.
    fn release(&self, buffers: impl IntoIterator<Item = wgpu::Buffer>) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        for b in buffers {
            pool.free.entry((b.size(), b.usage())).or_default().push(b);
        }
    }

    /// Create a storage buffer holding `data`, written in chunks of
    /// [`UPLOAD_CHUNK`] bytes with a submission and a wait after each:
    /// `queue.write_buffer` copies into a staging buffer that lives until the
    /// next submission completes, so one write of a 3 GB bank would hold a
    /// second 3 GB copy in host memory.
    pub(crate) fn upload(&self, label: &str, data: &[u8], extra: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            // Whole vec4s, so the vec4 kernels can bind every segment padded.
            size: (data.len() as u64).max(16).next_multiple_of(16),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | extra,
            mapped_at_creation: false,
        });
        let chunks = data.len().div_ceil(UPLOAD_CHUNK);
        for (i, chunk) in data.chunks(UPLOAD_CHUNK).enumerate() {
            if chunk.len().is_multiple_of(4) {
                self.queue.write_buffer(&buffer, (i * UPLOAD_CHUNK) as u64, chunk);
            } else {
                // The last chunk of data whose length is not a multiple of 4
                // (a u8 table): pad it, as write_buffer requires.
                let mut padded = chunk.to_vec();
                padded.resize(chunk.len().next_multiple_of(4), 0);
                self.queue.write_buffer(&buffer, (i * UPLOAD_CHUNK) as u64, &padded);
            }
            if chunks > 1 {
                self.queue.submit([]);
                self.wait()?;
            }
        }
        Ok(buffer)
    }

    /// Submit `encoder` and wait for it, reading back `ranges` (buffer,
    /// offset, bytes) with one staging buffer and one map.
    pub(crate) fn submit_and_read(
        &self,
        mut encoder: wgpu::CommandEncoder,
        ranges: &[(&wgpu::Buffer, u64, u64)],
    ) -> Result<Vec<Vec<u8>>> {
        let total: u64 = ranges.iter().map(|r| r.2.next_multiple_of(4)).sum();
        let mut scratch = Scratch::pooled(self);
        let staging = scratch.buffer(total.max(4), wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST)?;
        let mut at = 0;
        for &(buf, offset, bytes) in ranges {
            if bytes > 0 {
                encoder.copy_buffer_to_buffer(buf, offset, &staging, at, bytes.next_multiple_of(4));
            }
            at += bytes.next_multiple_of(4);
        }
        self.queue.submit([encoder.finish()]);
        let bytes = self.map_read(&staging, total)?;
        let mut at = 0usize;
        Ok(ranges
            .iter()
            .map(|r| {
                let v = bytes[at..at + r.2 as usize].to_vec();
                at += r.2.next_multiple_of(4) as usize;
                v
            })
            .collect())
    }

    /// Map `size` bytes of a MAP_READ buffer after the queue drains.
    fn map_read(&self, staging: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
        if size == 0 {
            self.wait()?;
            return Ok(Vec::new());
        }
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        staging.map_async(wgpu::MapMode::Read, 0..size, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        let readback =
            |what: &str, e: &dyn std::fmt::Display| Error::gpu(GpuErrorKind::Readback, format!("{what}: {e}"));
        pollster::block_on(rx.receive())
            .ok_or_else(|| Error::internal("the buffer map callback was dropped without being called"))?
            .map_err(|e| readback("mapping the readback buffer failed", &e))?;
        let data =
            staging.get_mapped_range(0..size).map_err(|e| readback("reading the mapped buffer failed", &e))?.to_vec();
        staging.unmap();
        Ok(data)
    }

    /// Block until the queue is idle.
    pub(crate) fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::gpu(GpuErrorKind::Readback, format!("waiting for the GPU failed: {e}")))?;
        self.check_lost()
    }

    /// A timer for the passes of one submission: GPU timestamps when the
    /// device has them, else `None` and callers fall back to wall time.
    pub(crate) fn timer(&self) -> Option<Timer> {
        if !self.timestamps {
            return None;
        }
        let set = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("hopfield timer"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Some(Timer { set, resolve, period_ns: self.timestamp_period_ns })
    }
}

/// Two timestamps around the compute passes of one submission.
pub(crate) struct Timer {
    pub(crate) set: wgpu::QuerySet,
    pub(crate) resolve: wgpu::Buffer,
    period_ns: f32,
}

impl Timer {
    /// Timestamp writes for a pass: `first` writes the start, `last` the end.
    pub(crate) fn writes(&self, first: bool, last: bool) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        (first || last).then(|| wgpu::ComputePassTimestampWrites {
            query_set: &self.set,
            beginning_of_pass_write_index: first.then_some(0),
            end_of_pass_write_index: last.then_some(1),
        })
    }

    /// Resolve the queries into the buffer (once, after the last pass).
    pub(crate) fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.resolve_query_set(&self.set, 0..2, &self.resolve, 0);
    }

    /// Elapsed time from the resolved bytes.
    pub(crate) fn elapsed(&self, bytes: &[u8]) -> Option<Duration> {
        let t: &[u64] = bytemuck::try_cast_slice(bytes).ok()?;
        let ticks = t.get(1)?.checked_sub(*t.first()?)?;
        Some(Duration::from_nanos((ticks as f64 * f64::from(self.period_ns)) as u64))
    }
}
