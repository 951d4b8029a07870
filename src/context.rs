//! The GPU context: one device and queue, with the caches every kernel shares
//! (compiled pipelines, pooled scratch buffers) and the plumbing to submit,
//! time and read back work. It is built either from an adapter the library
//! picks or from a `wgpu::Device` the caller already owns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::shaders;

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
}

/// Key of the pipeline cache: kernel file, entry point, override constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: &'static str,
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
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pool: Mutex<BufferPool>,
    /// First uncaptured wgpu error or device-lost message, turned into an
    /// [`Error::Gpu`] at the next synchronisation instead of a panic.
    gpu_error: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("adapter", &self.info.name).finish_non_exhaustive()
    }
}

/// Every adapter the instance can see for the given backends.
pub fn list_adapters(backends: Option<wgpu::Backends>) -> Vec<wgpu::AdapterInfo> {
    let instance = make_instance(backends);
    pollster::block_on(instance.enumerate_adapters(instance_backends(backends))).iter().map(|a| a.get_info()).collect()
}

fn instance_backends(backends: Option<wgpu::Backends>) -> wgpu::Backends {
    backends.unwrap_or_else(|| wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all()))
}

fn make_instance(backends: Option<wgpu::Backends>) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = instance_backends(backends);
    wgpu::Instance::new(desc)
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
        let instance = make_instance(opts.backends);
        let filter =
            opts.adapter_name.clone().or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok().filter(|s| !s.is_empty()));
        let adapters = pollster::block_on(instance.enumerate_adapters(instance_backends(opts.backends)));
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
                        "none on backends {:?} (WGPU_BACKEND narrows them): install a Vulkan driver \
                         (e.g. mesa-vulkan-drivers for lavapipe) and the loader (libvulkan1)",
                        instance_backends(opts.backends)
                    )
                } else {
                    format!("adapters present: {}", seen.join(", "))
                },
            })?;
        let info = chosen.get_info();
        let mut features = wgpu::Features::empty();
        if chosen.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        let (device, queue) = pollster::block_on(chosen.request_device(&wgpu::DeviceDescriptor {
            label: Some("hopfield-gpu"),
            required_features: features,
            required_limits: chosen.limits(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::DeviceRequest { adapter: info.name.clone(), reason: e.to_string() })?;
        Self::build(device, queue, Some(info), opts.max_binding_bytes)
    }

    /// Wrap a device and queue the caller already owns (a graphics app's).
    /// Nothing is copied; the library's buffers live on that device, and the
    /// caller's buffers can be used directly (see [`crate::MemoryBank::from_buffer`]).
    ///
    /// The library installs an uncaptured-error handler on the device so that
    /// a kernel error becomes an [`Error::Gpu`] instead of a panic.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        Self::build(device, queue, None, None)
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: Option<wgpu::AdapterInfo>,
        max_binding_bytes: Option<u64>,
    ) -> Result<Self> {
        let info = info.unwrap_or_else(|| device.adapter_info());
        let limits = device.limits();
        let timestamps = device.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let gpu_error = Arc::new(Mutex::new(None::<String>));
        let sink = gpu_error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }));
        let sink = gpu_error.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert_with(|| format!("device lost ({reason:?}): {msg}"));
            }
        });
        let real_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        // Bindings are kept a multiple of 16 bytes (vec4 loads) and of the
        // offset alignment, so a chunk boundary never splits a row badly.
        let max_binding = max_binding_bytes.map_or(real_binding, |b| b.min(real_binding)) & !255;
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
            gpu_error,
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
        }
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

    /// Turn a pending uncaptured error or device loss into an `Err`.
    pub(crate) fn check_gpu_error(&self) -> Result<()> {
        let mut slot = self.gpu_error.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(msg) => Err(Error::Gpu(msg)),
            None => Ok(()),
        }
    }

    /// The compute pipeline for `entry` in `shader` with the given override
    /// constants, compiled once per context. Layouts are derived from the
    /// shader (`layout: None`), so bind groups use `get_bind_group_layout(0)`.
    pub(crate) fn pipeline(
        &self,
        shader: &'static str,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let mut sorted: Vec<_> = constants.iter().map(|&(k, v)| (k, v.to_bits())).collect();
        sorted.sort_unstable();
        let key = PipelineKey { shader, entry, constants: sorted };
        if let Some(p) = self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(p.clone());
        }
        let module = {
            let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
            match modules.get(shader) {
                Some(m) => m.clone(),
                None => {
                    let source = shaders::source(shader)
                        .ok_or_else(|| Error::Unsupported(format!("no shader named {shader}")))?;
                    let m = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    });
                    modules.insert(shader, m.clone());
                    m
                }
            }
        };
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
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
        });
        self.check_gpu_error()?;
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// A scratch buffer of at least `size` bytes from the pool. Give it back
    /// with [`Context::release`] once the GPU is done with it.
    pub(crate) fn acquire(&self, size: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        let size = size.max(16);
        if size > self.limits.max_buffer_size {
            return Err(Error::DeviceLimit(format!(
                "a scratch buffer of {size} bytes exceeds the device's max_buffer_size ({})",
                self.limits.max_buffer_size
            )));
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
    pub(crate) fn release(&self, buffers: impl IntoIterator<Item = wgpu::Buffer>) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        for b in buffers {
            pool.free.entry((b.size(), b.usage())).or_default().push(b);
        }
    }

    /// Create a storage buffer holding `data`.
    pub(crate) fn upload(&self, label: &str, data: &[u8], extra: wgpu::BufferUsages) -> wgpu::Buffer {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (data.len() as u64).max(16).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | extra,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buffer, 0, data);
        buffer
    }

    /// Submit `encoder` and wait for it, reading back `ranges` (buffer,
    /// offset, bytes) with one staging buffer and one map.
    pub(crate) fn submit_and_read(
        &self,
        mut encoder: wgpu::CommandEncoder,
        ranges: &[(&wgpu::Buffer, u64, u64)],
    ) -> Result<Vec<Vec<u8>>> {
        let total: u64 = ranges.iter().map(|r| r.2.next_multiple_of(4)).sum();
        let staging = self.acquire(total.max(4), wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST)?;
        let mut at = 0;
        for &(buf, offset, bytes) in ranges {
            if bytes > 0 {
                encoder.copy_buffer_to_buffer(buf, offset, &staging, at, bytes.next_multiple_of(4));
            }
            at += bytes.next_multiple_of(4);
        }
        self.queue.submit([encoder.finish()]);
        let out = self.map_read(&staging, total);
        self.release([staging]);
        let bytes = out?;
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
        pollster::block_on(rx.receive())
            .ok_or_else(|| Error::Gpu("buffer map callback was dropped".into()))?
            .map_err(|e| Error::Gpu(format!("mapping the readback buffer failed: {e}")))?;
        let data = staging
            .get_mapped_range(0..size)
            .map_err(|e| Error::Gpu(format!("reading the mapped buffer failed: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(data)
    }

    /// Block until the queue is idle, then surface any GPU error.
    pub(crate) fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))?;
        self.check_gpu_error()
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
