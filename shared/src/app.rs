//! The composition root: the store, the invoker and the settings, built once per cold
//! start (or once per `cellmatrix serve`) and handed to every handler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::catalog::CatalogEntry;
use crate::config::Config;
use crate::error::Error;
use crate::fault::FaultyStore;
use crate::fqid::Fqid;
use crate::invoke::{DynInvoker, FaultyInvoker, Function, InProcess, LambdaInvoker};
use crate::store::DynStore;
use crate::store::retry::Retrying;

/// Everything a handler needs from the outside world.
#[derive(Debug)]
pub struct App {
    /// Settings.
    pub config: Config,
    /// Where bundles, requests and results live.
    pub store: DynStore,
    /// Starts sibling functions.
    pub invoker: DynInvoker,
    /// Bundle entries learnt from manifests on catalog misses, kept for the life of the
    /// process so that a warm request reads no manifest.
    pub learnt: Mutex<HashMap<Fqid, CatalogEntry>>,
    /// The `Arc` this app lives in: every constructor returns one.
    this: Weak<App>,
}

/// Concurrency of each function on the in-process invoker when none is given.
pub fn default_limit(function: Function) -> usize {
    match function {
        Function::Mapper => 4,
        Function::Worker => 4,
        Function::Reducer => 8,
    }
}

impl App {
    /// An app on `store` that invokes functions in this process, at most `limit(f)` at
    /// a time per function: the embedded stack and the tests.
    pub fn in_process(
        config: Config,
        store: DynStore,
        limit: impl Fn(Function) -> usize,
    ) -> Arc<App> {
        let mut in_process = InProcess::new(limit);
        if let Some(plan) = &config.faults {
            in_process = in_process.with_faults(plan.clone(), config.poll_interval);
        }
        let in_process = Arc::new(in_process);
        let invoker: DynInvoker = in_process.clone();
        let app = Arc::new_cyclic(|this| App {
            store: compose_store(&config, store),
            invoker: compose_invoker(&config, invoker),
            config,
            learnt: Mutex::new(HashMap::new()),
            this: this.clone(),
        });
        let weak = Arc::downgrade(&app);
        in_process.bind(weak);
        app
    }

    /// An app with any invoker (a test double, say); [`App::idle`] returns at once.
    pub fn with_invoker(config: Config, store: DynStore, invoker: DynInvoker) -> Arc<App> {
        Arc::new_cyclic(|this| App {
            store: compose_store(&config, store),
            invoker: compose_invoker(&config, invoker),
            config,
            learnt: Mutex::new(HashMap::new()),
            this: this.clone(),
        })
    }

    /// An app that opens the configured store and invokes functions in this process.
    pub async fn embedded(config: Config) -> Result<Arc<App>, Error> {
        let store = crate::store::open(&config.store).await?;
        Ok(Self::in_process(config, store, default_limit))
    }

    /// An app for a Lambda function: the configured store, and the Lambda invoker.
    pub async fn lambda(config: Config) -> Result<Arc<App>, Error> {
        let store = crate::store::open(&config.store).await?;
        let names = config.clone();
        let invoker = LambdaInvoker::from_env(|f| names.function_name(f).to_string()).await;
        Ok(Self::with_invoker(config, store, Arc::new(invoker)))
    }

    /// The `Arc` this app lives in, for what must own it (the API's router) where only a
    /// borrow is at hand.
    pub fn arc(&self) -> Arc<App> {
        self.this
            .upgrade()
            .expect("an app is borrowed only from the Arc it lives in")
    }

    /// Waits until every in-process invocation has finished (at once on Lambda).
    pub async fn idle(&self) {
        self.invoker.idle().await
    }
}

/// Every store is used through retries of its transient errors; under injected faults
/// the faults come first, so the retries are what meets them.
fn compose_store(config: &Config, store: DynStore) -> DynStore {
    let store = match &config.faults {
        Some(plan) => Arc::new(FaultyStore::new(store, plan.clone())) as DynStore,
        None => store,
    };
    Arc::new(Retrying::new(store, config.store_attempts))
}

fn compose_invoker(config: &Config, invoker: DynInvoker) -> DynInvoker {
    match &config.faults {
        Some(plan) => Arc::new(FaultyInvoker::new(invoker, plan.clone())),
        None => invoker,
    }
}
