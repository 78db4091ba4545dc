//! [`Runtime`]: builds the kernel from a [`RuntimeConfig`] and runs it until
//! told to stop, then drains.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = toka_runtime::host::caps::load("config/minimal.toml")?;
//! let report = toka_runtime::Runtime::new(config)?.run().await?;
//! println!("{} events published", report.bus.published);
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use toka_core::config::EventBusConfig;
use toka_core::{Agent, Context, RuntimeConfig};
use tokio::sync::{Notify, watch};
use wasmtime::Engine;

use crate::bus::{Bus, Subscriber};
use crate::error::{Error, Result};
use crate::host::cache::{Cache, CacheStats};
use crate::host::caps::Capabilities;
use crate::host::engine::{Codegen, EngineOptions, EpochTicker, MemoryLayout, new_engine_with};
use crate::host::module::Prepared;
use crate::host::trust::Trust;
use crate::host::{self, ModuleError};
use crate::mailbox::Mailbox;
use crate::native::NativeAgent;
use crate::publisher::{AgentPublisher, PublishGrant};
use crate::registry::{AgentKind, AgentReport, Plan, PlannedAgent, Report};
use crate::rpc::{AgentRpc, Router};
use crate::scheduler::{self, TickPlan};
use crate::worker::{self, AgentCounters, Health, ModuleCell, RunQueue, WasmAgent, WorkerContext};
use rayon::prelude::*;

/// Options for building a [`Runtime`] beyond the configuration file.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Refuse to build if any module fails to load (default: report it and
    /// run the other agents).
    pub strict: bool,
    /// Keep compiled modules in this directory and reuse them across runs
    /// (see [`host::cache`]; it must be writable by the operator only).
    /// `None`, the default: compile every module in memory.
    pub cache_dir: Option<PathBuf>,
    /// Where instances and linear memories live (see
    /// [`MemoryLayout`]). `None`, the default: chosen from the number of
    /// agents by [`MemoryLayout::for_agents`].
    pub memory_layout: Option<MemoryLayout>,
    /// Compile modules in child processes running this program (a `toka`
    /// binary with the `compiler` feature, as `<program> __compile`; the
    /// `toka` command passes itself), each within `[modules]
    /// compile_timeout` and `compile_memory_mb` (see
    /// [`host::compile`]). `None`, the default: compile in this process,
    /// with no budget (for embedders whose modules are their own).
    pub compiler_program: Option<PathBuf>,
    /// Compile modules the cache does not hold in the background, so that
    /// agents whose modules are ready start at once and a slow compile
    /// delays only its own agents (which wait in [`Health::Loading`], their
    /// events queued). Reading, signature and cache checks still happen in
    /// [`Runtime::with_options`]. Ignored with `strict`, which must see every
    /// module compiled. Default `false`: everything is compiled before
    /// `with_options` returns, as [`Runtime::plan`] then reports.
    pub background_compile: bool,
    /// Build without binding the `[http]` listener (for a plan only, as
    /// `toka check` makes while the real runtime may hold the port). The
    /// routes are still checked; [`Runtime::run`] then serves nothing.
    pub no_listen: bool,
}

/// Asks a running [`Runtime`] to shut down gracefully.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    /// Begin graceful shutdown: stop intake, drain, return the report.
    pub fn shutdown(&self) {
        // `send_replace`, not `send`: the runtime may not be listening yet
        // (asked to stop before `run` began), and `send` drops the value
        // when nobody is subscribed.
        self.0.send_replace(true);
    }
}

/// The Toka kernel.
pub struct Runtime {
    bus_config: EventBusConfig,
    ignored_sections: Vec<String>,
    engine: Engine,
    bus: Bus,
    queue: RunQueue,
    wasm: Vec<Arc<WasmAgent>>,
    native: Vec<NativeAgent>,
    failed: Vec<(String, ModuleError)>,
    cache_stats: Option<CacheStats>,
    ticks: TickPlan,
    router: Arc<Router>,
    shutdown: watch::Sender<bool>,
    /// The `[http]` listener, bound, when `listen` is set.
    #[cfg(feature = "http")]
    http: Option<toka_http::host::server::Server>,
    /// The agents `[[http.routes]]` serve, for the plan.
    #[cfg(feature = "http")]
    routed: Vec<PlannedAgent>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("wasm_agents", &self.wasm.len())
            .field("native_agents", &self.native.len())
            .finish_non_exhaustive()
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != toka_core::event::kinds::RUNTIME_SOURCE
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Runtime {
    /// Build the runtime: compile every module, link it, wire every agent to
    /// the bus. Modules that fail are reported (see [`Runtime::plan`]) and
    /// their agents left out.
    pub fn new(config: RuntimeConfig) -> Result<Self> {
        Self::with_options(config, RuntimeOptions::default())
    }

    /// [`Runtime::new`] with options.
    pub fn with_options(config: RuntimeConfig, options: RuntimeOptions) -> Result<Self> {
        if !config.ignored_sections.is_empty() {
            tracing::warn!(
                sections = %config.ignored_sections.join(", "),
                file = %config.source.display(),
                "ignoring config sections this build does not understand"
            );
        }
        for section in config
            .ignored_sections
            .iter()
            .filter(|s| matches!(s.as_str(), "drivers" | "providers"))
        {
            tracing::warn!(
                section = %section,
                file = %config.source.display(),
                "[{section}.*] is not built into this build: its agents do not run (rebuild `toka` with `--features driver-s3,provider-stripe`, or `portable`)"
            );
        }
        for key in &config.unknown_keys {
            tracing::warn!(key = %key, "ignoring unknown config key");
        }
        // Grants are checked (and stores opened) before any module is compiled:
        // a grant this build cannot honour is the operator's error, found fast.
        let capabilities = Capabilities::open(&config).map_err(Error::Capability)?;
        let trust = Trust::from_config(&config.trust).map_err(Error::Capability)?;
        #[cfg(feature = "http")]
        let inbound = toka_http::host::routes::Inbound::from_config(&config)?;
        // Every request a route runs at once holds an instance of its own.
        #[cfg(feature = "http")]
        let instances = config.agents.len()
            + inbound
                .as_ref()
                .map_or(0, |i| i.routes.iter().map(|r| r.max_concurrent).sum());
        #[cfg(not(feature = "http"))]
        let instances = config.agents.len();
        let layout = options
            .memory_layout
            .unwrap_or_else(|| MemoryLayout::for_agents(instances));
        let engine_options = EngineOptions::for_config(&config);
        let engine = new_engine_with(&engine_options, layout).map_err(Error::Engine)?;
        let linker = host::new_linker(&engine).map_err(Error::Engine)?;

        // A cache that cannot be used costs compile time, not the run.
        let cache = options.cache_dir.as_ref().and_then(|dir| {
            match Cache::open(dir, Codegen::new(&engine_options, layout)) {
                Ok(cache) => Some(cache),
                Err(error) => {
                    tracing::warn!(
                        dir = %dir.display(),
                        %error,
                        "module cache unusable; compiling without it"
                    );
                    None
                }
            }
        });
        // Each distinct file is compiled once, however many agents use it;
        // distinct files are compiled in parallel.
        let mut paths: Vec<PathBuf> = config.agents.iter().map(|a| a.module.clone()).collect();
        paths.sort();
        paths.dedup();
        let started = Instant::now();
        let load = host::module::LoadOptions::for_engine(
            &config.modules,
            options.compiler_program.as_deref(),
            &engine_options,
            layout,
        );
        // With `background_compile`, what needs compiling is left for later
        // and everything else (reading, trust, the cache) is done now.
        let background = options.background_compile && !options.strict;
        let mut compiles = Vec::new();
        let modules: HashMap<PathBuf, Result<Arc<ModuleCell>, ModuleError>> = if background {
            let prepared: Vec<_> = paths
                .par_iter()
                .map(|path| {
                    host::module::prepare(&engine, &linker, path, cache.as_ref(), &trust, &load)
                })
                .collect();
            paths
                .into_iter()
                .zip(prepared)
                .map(|(path, prepared)| {
                    let cell = prepared.map(|p| match p {
                        Prepared::Ready(module) => ModuleCell::ready(path.clone(), module),
                        Prepared::Compile { bytes, miss } => {
                            let cell = ModuleCell::loading(path.clone());
                            compiles.push((cell.clone(), bytes, miss));
                            cell
                        }
                    });
                    (path, cell)
                })
                .collect()
        } else {
            let loaded =
                host::module::load_all(&engine, &linker, &paths, cache.as_ref(), &trust, &load);
            paths
                .into_iter()
                .zip(loaded)
                .map(|(path, loaded)| {
                    let cell = loaded.map(|m| ModuleCell::ready(path.clone(), m));
                    (path, cell)
                })
                .collect()
        };
        let cache_stats = cache.as_ref().map(|c| c.stats());
        tracing::info!(
            modules = modules.len(),
            compiling = compiles.len(),
            elapsed = ?started.elapsed(),
            cache = %cache.as_ref().map_or_else(|| "off".into(), |c| c.dir().display().to_string()),
            hits = cache_stats.map(|s| s.hits),
            misses = cache_stats.map(|s| s.misses),
            rebuilt = cache_stats.map(|s| s.rebuilt),
            "modules loaded"
        );

        let bus = Bus::new();
        let queue = RunQueue::new();
        let router = Arc::new(Router::new(config.requests));
        let mut servers = Vec::new();
        let mut wasm = Vec::new();
        let mut failed = Vec::new();
        let mut ticks = TickPlan {
            global: config.event_bus.scheduler_tick,
            own: BTreeMap::new(),
        };
        #[cfg(feature = "http")]
        let mut routed = Vec::new();
        #[cfg(feature = "http")]
        let mut http_targets: Vec<Option<crate::inbound::Target>> = inbound
            .as_ref()
            .map_or_else(Vec::new, |i| i.routes.iter().map(|_| None).collect());
        for agent in config.agents {
            #[cfg(feature = "http")]
            if let Some(inbound) = &inbound
                && inbound.routes.iter().any(|r| r.agent == agent.name)
            {
                let target = routed_agent(
                    &agent,
                    &modules,
                    &capabilities,
                    (&bus, &router),
                    engine_options.fuel,
                    options.strict,
                    &mut failed,
                )?;
                if let Some(target) = target {
                    let mut grants = kernel_grants(&agent);
                    for (slot, route) in http_targets.iter_mut().zip(&inbound.routes) {
                        if route.agent == agent.name {
                            *slot = Some(target.clone());
                            grants.push(format!(
                                "http route: {} on {} ({} at once)",
                                route.path, inbound.listen, route.max_concurrent
                            ));
                        }
                    }
                    grants.extend(target.caps.grants.iter().cloned());
                    routed.push(PlannedAgent {
                        name: agent.name.clone(),
                        kind: AgentKind::Wasm(agent.module.clone()),
                        subscribe: agent.subscribe.clone(),
                        publish: Some(agent.publish.clone()),
                        every: None,
                        limits: Some(agent.limits),
                        settings: agent.settings.iter().map(|(k, _)| k.clone()).collect(),
                        grants,
                    });
                }
                continue;
            }
            let module = match &modules[&agent.module] {
                Ok(cell) => match cell.get() {
                    Some(Ok(m)) => match worker::server_module_error(&agent, m) {
                        Some(e) => Err(e),
                        None => Ok(cell.clone()),
                    },
                    _ => Ok(cell.clone()),
                },
                Err(e) => Err(e.clone()),
            };
            let module = match module {
                Ok(m) => m,
                Err(e) => {
                    if options.strict {
                        return Err(Error::Module {
                            agent: agent.name,
                            source: e,
                        });
                    }
                    tracing::error!(agent = %agent.name, error = %e, "agent module failed to load; the other agents still start");
                    failed.push((agent.name, e));
                    continue;
                }
            };
            let index = wasm.len();
            let name: Arc<str> = Arc::from(agent.name.as_str());
            let (waker, scheduled) = WasmAgent::waker(index, &queue);
            let capacity = agent.limits.mailbox.unwrap_or(config.event_bus.buffer_size);
            let mailbox = Arc::new(Mailbox::new(name.clone(), capacity, waker));
            let sub = bus.add_subscriber(Subscriber {
                patterns: agent.subscribe.clone(),
                own_ticks: agent.every.is_some(),
                mailbox: mailbox.clone(),
            });
            if let Some(every) = agent.every {
                ticks.own.entry(every).or_default().push(sub);
            }
            let publisher = Arc::new(AgentPublisher::new(
                name,
                PublishGrant::Patterns(agent.publish.clone()),
                agent.limits.max_payload_bytes,
                Some((agent.limits.publish_rate, agent.limits.publish_burst)),
                bus.clone(),
            ));
            let caps = capabilities.for_agent(&agent).map_err(Error::Capability)?;
            if !agent.serve.is_empty() {
                servers.push((index, agent.serve.clone()));
            }
            let rpc = Arc::new(AgentRpc::new(
                Some(index),
                Arc::from(agent.name.as_str()),
                agent.request.clone(),
                agent.limits.max_payload_bytes,
                router.clone(),
            ));
            wasm.push(Arc::new(WasmAgent::new(
                index,
                agent,
                module,
                publisher,
                mailbox,
                scheduled,
                &queue,
                engine_options.fuel,
                caps,
                rpc,
            )));
        }
        // Servers take the first turns of the run, before any event
        // published from now on wakes a client: a client's first request
        // then finds its server running instead of queueing behind its start.
        for (index, _) in &servers {
            wasm[*index].schedule();
        }
        router.set_servers(servers);

        if !compiles.is_empty() {
            spawn_compiles(
                compiles,
                &wasm,
                CompileCx {
                    engine: engine.clone(),
                    linker,
                    cache: cache.map(Arc::new),
                    load,
                },
            );
        }

        #[cfg(feature = "http")]
        let http = match inbound {
            None => None,
            Some(_) if options.no_listen => None,
            Some(inbound) => {
                let listen = inbound.listen;
                let routes = crate::inbound::Routes {
                    engine: engine.clone(),
                    bus: bus.clone(),
                    targets: http_targets,
                };
                let server = toka_http::host::server::Server::bind(inbound, Arc::new(routes))
                    .map_err(|e| {
                        Error::Capability(host::caps::CapError::shared(format!(
                            "[http] listen = \"{listen}\": cannot listen: {e}"
                        )))
                    })?;
                Some(server)
            }
        };

        Ok(Runtime {
            #[cfg(feature = "http")]
            http,
            #[cfg(feature = "http")]
            routed,
            bus_config: config.event_bus,
            ignored_sections: config.ignored_sections,
            engine,
            bus,
            queue,
            wasm,
            native: Vec::new(),
            failed,
            cache_stats,
            ticks,
            router,
            shutdown: watch::channel(false).0,
        })
    }

    /// The address the `[http]` listener is bound to (its port chosen by
    /// the system when `listen` had port 0), if it has one.
    #[cfg(feature = "http")]
    pub fn http_listener(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(|s| s.local_addr())
    }

    /// Register a native Rust agent beside the configured wasm agents. It
    /// receives the kinds its [`Agent::interest`] names and may publish any
    /// non-runtime kind.
    pub fn register<A: Agent>(&mut self, name: &str, agent: A) -> Result<()> {
        if !valid_name(name) {
            return Err(Error::InvalidName(name.into()));
        }
        let taken = self.wasm.iter().any(|a| a.name() == name)
            || self.native.iter().any(|a| &*a.name == name);
        if taken {
            return Err(Error::DuplicateAgent(name.into()));
        }
        let name: Arc<str> = Arc::from(name);
        let notify = Arc::new(Notify::new());
        let mailbox = Arc::new(Mailbox::new(
            name.clone(),
            self.bus_config.buffer_size,
            notify.clone(),
        ));
        let interest = Agent::interest(&agent);
        self.bus.add_subscriber(Subscriber {
            patterns: interest,
            own_ticks: false,
            mailbox: mailbox.clone(),
        });
        let publisher = Arc::new(AgentPublisher::new(
            name.clone(),
            PublishGrant::AnyUserKind,
            u64::MAX,
            None,
            self.bus.clone(),
        ));
        self.native.push(NativeAgent {
            context: Context::new(name.clone(), publisher),
            name,
            agent: Arc::new(agent),
            mailbox,
            notify,
            handled: Default::default(),
        });
        Ok(())
    }

    /// What will run: agents, grants, subscriptions, failures.
    pub fn plan(&self) -> Plan {
        let mut agents: Vec<PlannedAgent> = self
            .wasm
            .iter()
            .map(|a| PlannedAgent {
                name: a.config.name.clone(),
                kind: AgentKind::Wasm(a.module.path.clone()),
                subscribe: a.config.subscribe.clone(),
                publish: Some(a.config.publish.clone()),
                every: a.config.every,
                limits: Some(a.config.limits),
                settings: a.config.settings.iter().map(|(k, _)| k.clone()).collect(),
                grants: kernel_grants(&a.config)
                    .into_iter()
                    .chain(a.caps.grants.iter().cloned())
                    .collect(),
            })
            .collect();
        agents.extend(self.native.iter().map(|a| PlannedAgent {
            name: a.name.to_string(),
            kind: AgentKind::Native,
            subscribe: a.agent.interest(),
            publish: None,
            every: None,
            limits: None,
            settings: Vec::new(),
            grants: Vec::new(),
        }));
        #[cfg(feature = "http")]
        agents.extend(self.routed.iter().cloned());
        Plan {
            agents,
            failed: self.failed.clone(),
            tick: self.bus_config.scheduler_tick,
            buffer_size: self.bus_config.buffer_size,
            ignored_sections: self.ignored_sections.clone(),
        }
    }

    /// A publishing handle for the embedder: events appear with `source` as
    /// their source and may have any non-runtime kind. Usable before and
    /// during [`Runtime::run`]; events published before the run are queued.
    pub fn injector(&self, source: &str) -> Context {
        let source: Arc<str> = Arc::from(source);
        let publisher = AgentPublisher::new(
            source.clone(),
            PublishGrant::AnyUserKind,
            u64::MAX,
            None,
            self.bus.clone(),
        )
        .external();
        Context::new(source, Arc::new(publisher))
    }

    /// The bus (publish from the embedder's side with [`Runtime::injector`]).
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// How the module cache served this build: `None` without a cache.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache_stats
    }

    /// The engine every agent runs on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Live counters of the wasm agent `name` (events handled, starts,
    /// faults), readable from any thread while the runtime runs; `None` if
    /// there is no such wasm agent. Take it before [`Runtime::run`].
    pub fn agent_stats(&self, name: &str) -> Option<Arc<AgentCounters>> {
        self.wasm
            .iter()
            .find(|a| a.name() == name)
            .map(|a| a.counters.clone())
    }

    /// A handle that triggers graceful shutdown of [`Runtime::run`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Run until Ctrl-C or SIGTERM (or a [`ShutdownHandle`]), then drain.
    pub async fn run(self) -> Result<Report> {
        self.run_until(shutdown_signal()).await
    }

    /// Run until `stop` completes (or a [`ShutdownHandle`] fires), then
    /// shut down gracefully: stop ticks and intake, let mailboxes drain until
    /// `drain_timeout`, stop the workers.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> Result<Report> {
        let Runtime {
            bus_config,
            engine,
            bus,
            queue,
            wasm,
            native,
            failed,
            ticks,
            shutdown,
            router,
            #[cfg(feature = "http")]
            http,
            ..
        } = self;
        let _epoch = EpochTicker::start(&engine);
        let agents: Arc<[Arc<WasmAgent>]> = wasm.into();
        let workers_n = bus_config
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let cx = Arc::new(WorkerContext {
            engine: engine.clone(),
            bus: bus.clone(),
            agents: agents.clone(),
            timers: tokio::runtime::Handle::current(),
            abandon: Default::default(),
        });
        router.start(&cx);
        let workers = worker::spawn_workers(workers_n, &queue, cx.clone());
        tracing::info!(
            wasm_agents = agents.len(),
            native_agents = native.len(),
            workers = workers_n,
            "runtime started"
        );
        // Every agent gets a first turn, which instantiates it and runs `init`.
        for agent in agents.iter() {
            agent.schedule();
        }
        let native_tasks: Vec<_> = native.iter().map(|a| a.spawn(bus.clone())).collect();
        #[cfg(feature = "http")]
        let http_task = http.map(|server| {
            let mut stop = shutdown.subscribe();
            tokio::spawn(server.run(async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        });
        let mut stopped = shutdown.subscribe();
        let tick_tasks = scheduler::spawn(bus.clone(), ticks, shutdown.subscribe());

        tokio::select! {
            () = stop => {}
            _ = stopped.wait_for(|s| *s) => {}
        }

        tracing::info!(in_flight = bus.in_flight(), deadline = ?bus_config.drain_timeout, "shutting down: ticks and outside input stopped, draining mailboxes");
        shutdown.send_replace(true);
        bus.stop_intake();
        for t in tick_tasks {
            let _ = t.await;
        }
        // The listener stops accepting with the rest of the outside input.
        #[cfg(feature = "http")]
        if let Some(t) = http_task {
            match t.await {
                Ok(Err(error)) => tracing::warn!(%error, "http listener stopped with an error"),
                Err(error) => tracing::warn!(%error, "http listener task failed"),
                Ok(Ok(())) => {}
            }
        }
        let abandoned = match tokio::time::timeout(bus_config.drain_timeout, bus.wait_idle()).await
        {
            Ok(()) => 0,
            Err(_) => {
                let left = bus.in_flight();
                tracing::warn!(
                    abandoned = left,
                    "drain deadline passed; abandoning queued events"
                );
                left
            }
        };
        // Workers check this between events, so a full batch does not keep
        // shutdown waiting past the drain deadline.
        cx.abandon.store(abandoned > 0, Ordering::Relaxed);
        bus.close();
        worker::stop_workers(workers_n, &queue);
        let _ = tokio::task::spawn_blocking(move || {
            workers.join();
        })
        .await;
        for t in native_tasks {
            t.abort();
        }

        let mut reports: Vec<AgentReport> = agents
            .iter()
            .map(|a| AgentReport {
                name: a.name().to_string(),
                handled: a.counters.handled.load(Ordering::Relaxed),
                errors: a.counters.errors.load(Ordering::Relaxed),
                faults: a.counters.faults.load(Ordering::Relaxed),
                starts: a.counters.starts.load(Ordering::Relaxed),
                dropped: a.mailbox.dropped(),
                published: a.publisher.published(),
                refused: a.publisher.denied(),
                output_logged: a.counters.output.logged.load(Ordering::Relaxed),
                output_discarded: a.counters.output.discarded.load(Ordering::Relaxed),
                log_records: a.counters.output.log_records.load(Ordering::Relaxed),
                log_bytes: a.counters.output.log_bytes.load(Ordering::Relaxed),
                log_records_dropped: a
                    .counters
                    .output
                    .log_records_dropped
                    .load(Ordering::Relaxed),
                log_bytes_dropped: a.counters.output.log_bytes_dropped.load(Ordering::Relaxed),
                quarantined: a.health() == Health::Quarantined,
            })
            .collect();
        reports.extend(native.iter().map(|a| AgentReport {
            name: a.name.to_string(),
            handled: a.handled.load(Ordering::Relaxed),
            errors: 0,
            faults: 0,
            starts: 1,
            dropped: a.mailbox.dropped(),
            published: 0,
            refused: 0,
            output_logged: 0,
            output_discarded: 0,
            log_records: 0,
            log_bytes: 0,
            log_records_dropped: 0,
            log_bytes_dropped: 0,
            quarantined: false,
        }));
        // Modules that failed to compile in the background.
        let mut failed = failed;
        for agent in agents.iter() {
            if let Some(Err(e)) = agent.module.get()
                && !failed.iter().any(|(name, _)| name == agent.name())
            {
                failed.push((agent.name().to_string(), e.clone()));
            }
        }
        let report = Report {
            agents: reports,
            bus: bus.stats(),
            abandoned,
            failed,
        };
        tracing::info!(
            published = report.bus.published,
            delivered = report.bus.delivered,
            dropped = report.bus.dropped,
            abandoned,
            "runtime stopped"
        );
        Ok(report)
    }
}

/// What a background compile needs.
struct CompileCx {
    engine: Engine,
    linker: wasmtime::component::Linker<host::HostState>,
    cache: Option<Arc<Cache>>,
    load: host::module::LoadOptions,
}

/// Compile each of `compiles` on its own thread (each compile runs in a
/// child process when the compiler is bounded, so this is mostly waiting),
/// then hand the module to the agents that run it.
fn spawn_compiles(
    compiles: Vec<(Arc<ModuleCell>, Vec<u8>, Option<host::cache::Miss>)>,
    agents: &[Arc<WasmAgent>],
    cx: CompileCx,
) {
    let cx = Arc::new(cx);
    for (cell, bytes, miss) in compiles {
        let users: Vec<Arc<WasmAgent>> = agents
            .iter()
            .filter(|a| Arc::ptr_eq(&a.module, &cell))
            .cloned()
            .collect();
        let cx = cx.clone();
        let (failed_cell, failed_users) = (cell.clone(), users.clone());
        let spawned = std::thread::Builder::new()
            .name("toka-compile".into())
            .spawn(move || {
                let started = Instant::now();
                let loaded = host::module::finish(
                    &cx.engine,
                    &cx.linker,
                    &cell.path,
                    cx.cache.as_deref(),
                    &cx.load,
                    &bytes,
                    miss,
                );
                match &loaded {
                    Ok(_) => tracing::info!(
                        module = %cell.path.display(),
                        elapsed = ?started.elapsed(),
                        "module compiled in the background"
                    ),
                    Err(e) => {
                        for agent in &users {
                            tracing::error!(agent = agent.name(), error = %e, "agent module failed to load; the other agents still start");
                        }
                    }
                }
                cell.fill(loaded, &users);
            });
        if let Err(e) = spawned {
            let error = ModuleError {
                path: failed_cell.path.clone(),
                reason: format!("cannot start a thread to compile it: {e}"),
            };
            tracing::error!(%error, "agent module failed to load; the other agents still start");
            failed_cell.fill(Err(error), &failed_users);
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The kernel's grants of `agent` (request/reply and `dirs`), as `toka
/// check` prints them.
fn kernel_grants(agent: &toka_core::AgentConfig) -> Vec<String> {
    let list = |set: &toka_core::PatternSet| {
        set.patterns()
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut lines = Vec::new();
    if !agent.serve.is_empty() {
        lines.push(format!("serve: {}", list(&agent.serve)));
    }
    if !agent.request.is_empty() {
        lines.push(format!("request: {}", list(&agent.request)));
    }
    for dir in &agent.dirs {
        let mode = if dir.writable {
            "writable"
        } else {
            "read-only"
        };
        lines.push(format!(
            "dir: {} = {} ({mode})",
            dir.guest,
            dir.host.display()
        ));
    }
    lines
}

/// The listener's target for `agent`, named in `[[http.routes]]`: its
/// module, capabilities, publisher and budget. A routed agent handles no
/// events (see [`crate::inbound`]), so `subscribe`, `every` and `serve` on
/// it are the operator's error. A module that failed to load is reported
/// like any agent's (fatal when strict) and its routes answer 503.
#[cfg(feature = "http")]
fn routed_agent(
    agent: &toka_core::AgentConfig,
    modules: &HashMap<PathBuf, Result<Arc<ModuleCell>, ModuleError>>,
    capabilities: &Capabilities,
    (bus, router): (&Bus, &Arc<Router>),
    fuel_metered: bool,
    strict: bool,
    failed: &mut Vec<(String, ModuleError)>,
) -> Result<Option<crate::inbound::Target>> {
    for (key, set) in [
        ("subscribe", !agent.subscribe.is_empty()),
        ("every", agent.every.is_some()),
        ("serve", !agent.serve.is_empty()),
    ] {
        if set {
            return Err(Error::Capability(host::caps::CapError::agent(
                agent,
                format!(
                    "`{key}`: the agent serves `[[http.routes]]`, one fresh instance per request, and handles no events or requests; give the events to another agent"
                ),
            )));
        }
    }
    let module = match &modules[&agent.module] {
        Ok(cell) => match cell.get() {
            Some(Ok(m)) if m.proxy.is_none() => Err(ModuleError {
                path: m.path.clone(),
                reason: format!(
                    "agent `{}` is routed by `[[http.routes]]` but the component does not export `wasi:http/incoming-handler@0.2.x` (build it for world `http-agent` or as a `wasi:http/proxy` component)",
                    agent.name
                ),
            }),
            _ => Ok(cell.clone()),
        },
        Err(e) => Err(e.clone()),
    };
    let module = match module {
        Ok(m) => m,
        Err(e) => {
            if strict {
                return Err(Error::Module {
                    agent: agent.name.clone(),
                    source: e,
                });
            }
            tracing::error!(agent = %agent.name, error = %e, "routed agent's module failed to load; its routes answer 503");
            failed.push((agent.name.clone(), e));
            return Ok(None);
        }
    };
    let name: Arc<str> = Arc::from(agent.name.as_str());
    let publisher = Arc::new(AgentPublisher::new(
        name.clone(),
        PublishGrant::Patterns(agent.publish.clone()),
        agent.limits.max_payload_bytes,
        Some((agent.limits.publish_rate, agent.limits.publish_burst)),
        bus.clone(),
    ));
    Ok(Some(crate::inbound::Target {
        name: name.clone(),
        module,
        caps: capabilities.for_agent(agent).map_err(Error::Capability)?,
        dirs: agent.dirs.clone().into(),
        publisher,
        limits: agent.limits,
        budget: host::Budget::from_limits(&agent.limits, fuel_metered),
        counters: Arc::default(),
        // Not a worker: no index (see `AgentRpc`), but its `request` grant.
        rpc: Arc::new(AgentRpc::new(
            None,
            name.clone(),
            agent.request.clone(),
            agent.limits.max_payload_bytes,
            router.clone(),
        )),
    }))
}
