//! A blob store on S3 (or any S3-compatible endpoint) via aws-sdk-s3.
//!
//! Outcomes are decided on the raw HTTP status and the S3 error code rather than on the
//! SDK's modelled error variants: most of the answers that matter here (412 from a
//! conditional write, 416 from a range read, 404 from HEAD) arrive as "unhandled" errors
//! whose only reliable marks are the status and the code.

use std::ops::Range;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{
    BlobStore, ObjectMeta, PutOutcome, StoreError, StoreResult, Upload, validate_key,
    validate_prefix,
};

/// Region used when neither the config nor the environment names one; moto and most
/// S3-compatible servers accept anything, and us-east-1 needs no bucket location constraint.
const DEFAULT_REGION: &str = "us-east-1";

/// Attempts per request by the SDK's standard retry mode (its own default).
const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The SDK's first backoff before retrying a request (doubled per retry, full jitter),
/// instead of its standard 1 s. S3 answers small requests in tens of ms, and a worker
/// reading one-cell bundles makes ~15 requests per slice: with the standard backoff one
/// 503 SlowDown costs a slice the time of forty round trips (the simulation, at #6's
/// 5% 503 rate, put a 1,000-slice task at 150 s instead of 25). S3's performance
/// guidelines advise retrying latency-sensitive requests aggressively; when 503s
/// persist, the `Retrying` layer above backs off further (20 ms doubling to 2 s).
pub const SDK_INITIAL_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// How often a conditional write that collided with a concurrent one (409) is retried.
const CONFLICT_RETRIES: u32 = 6;

/// Static credentials, for tests and local servers; normally the AWS chain provides them.
#[derive(Clone)]
pub struct S3Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    // Configs end up in logs; the secret must not.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Requests one store has in flight at most, by default: a worker reading its 64 small
/// slices at once has 7 requests open for each (`handlers::worker`), and fewer permits
/// would queue them behind each other, a round trip each. Lambda allows 1,024 file
/// descriptors, one per connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;

/// How long a read waits for S3's answer before it is sent once more, by default
/// ([`hedged`]): about the 90th percentile of a small GET's latency (the simulation's
/// model: median 25 ms, sigma 0.7, so p90 61 ms), so that one read in ten is sent twice.
/// A worker's round of a few hundred reads waits for its slowest; AWS's performance
/// guidelines advise retrying a slow read rather than waiting for it.
pub const DEFAULT_HEDGE_AFTER: Duration = Duration::from_millis(60);

/// Settings of an S3 store.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// A key prefix inside the bucket ("" for none).
    pub prefix: String,
    /// Endpoint override (moto on loopback in tests). Implies path-style addressing.
    pub endpoint: Option<String>,
    /// Most requests in flight at once from this store.
    pub max_in_flight: usize,
    /// Region; `None` takes it from the AWS environment, else [`DEFAULT_REGION`].
    pub region: Option<String>,
    /// Static credentials; `None` uses the standard AWS credential chain.
    pub credentials: Option<S3Credentials>,
    /// Attempts per request in the SDK's standard retry mode (1 disables its retries).
    pub max_attempts: u32,
    /// A GET or HEAD not answered within this long is sent once more ([`hedged`]);
    /// `None` never.
    pub hedge_after: Option<Duration>,
}

impl S3Config {
    /// Settings with defaults, ignoring the environment.
    pub fn new(bucket: &str, prefix: &str) -> Self {
        S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            region: None,
            credentials: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            hedge_after: Some(DEFAULT_HEDGE_AFTER),
        }
    }

    /// Settings from the environment (`CELLMATRIX_S3_ENDPOINT`, `CELLMATRIX_S3_MAX_IN_FLIGHT`,
    /// `CELLMATRIX_S3_MAX_ATTEMPTS`, `CELLMATRIX_S3_HEDGE_MS`, 0 for never).
    pub fn from_env(bucket: &str, prefix: &str) -> Self {
        let parsed = |name| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let mut config = S3Config::new(bucket, prefix);
        config.endpoint = std::env::var("CELLMATRIX_S3_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty());
        if let Some(n) = parsed("CELLMATRIX_S3_MAX_IN_FLIGHT") {
            config.max_in_flight = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = parsed("CELLMATRIX_S3_MAX_ATTEMPTS") {
            config.max_attempts = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(ms) = parsed("CELLMATRIX_S3_HEDGE_MS") {
            config.hedge_after = (ms > 0).then(|| Duration::from_millis(ms));
        }
        config
    }

    /// With an endpoint override.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// With a fixed region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// With static credentials.
    pub fn with_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = Some(S3Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        });
        self
    }

    /// With a number of SDK attempts per request.
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// With a bound on requests in flight.
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }
}

/// The S3 store.
#[derive(Debug)]
pub struct S3Store {
    config: S3Config,
    client: Client,
    permits: Arc<Semaphore>,
}

impl S3Store {
    /// Builds the client once, from the config and the standard AWS configuration chain.
    /// Makes no request.
    pub async fn connect(config: S3Config) -> crate::Result<Self> {
        if config.bucket.is_empty() {
            return Err(crate::Error::input("S3 location", "empty bucket name"));
        }
        if !config.prefix.is_empty() {
            validate_key(&config.prefix)?;
        }

        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        loader = match &config.region {
            Some(region) => loader.region(Region::new(region.clone())),
            None => loader.region(
                RegionProviderChain::default_provider().or_else(Region::new(DEFAULT_REGION)),
            ),
        };
        if let Some(c) = &config.credentials {
            loader = loader.credentials_provider(Credentials::new(
                &c.access_key_id,
                &c.secret_access_key,
                c.session_token.clone(),
                None,
                "cellmatrix-s3-config",
            ));
        }
        let shared = loader.load().await;

        let mut builder = aws_sdk_s3::config::Builder::from(&shared).retry_config(
            RetryConfig::standard()
                .with_max_attempts(config.max_attempts.max(1))
                .with_initial_backoff(SDK_INITIAL_BACKOFF),
        );
        if let Some(endpoint) = &config.endpoint {
            // Local servers have no wildcard DNS for virtual-hosted buckets.
            builder = builder.endpoint_url(endpoint).force_path_style(true);
        }
        let client = Client::from_conf(builder.build());

        Ok(S3Store {
            permits: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            config,
            client,
        })
    }

    /// The settings this store was built from.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The SDK client, for operations the trait does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the bucket unless it exists (for tests and local setups).
    pub async fn create_bucket_if_missing(&self) -> StoreResult<()> {
        let bucket = &self.config.bucket;
        let head = {
            let _permit = self.permit("head_bucket", bucket).await?;
            self.client.head_bucket().bucket(bucket).send().await
        };
        match head {
            Ok(_) => return Ok(()),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(classify("head_bucket", bucket, &e)),
        }

        let mut create = self.client.create_bucket().bucket(bucket);
        let region = self
            .client
            .config()
            .region()
            .map(|r| r.as_ref().to_string());
        if let Some(region) = region.filter(|r| r != DEFAULT_REGION) {
            // Outside us-east-1 S3 refuses a create without a matching location constraint.
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region.as_str()))
                    .build(),
            );
        }
        let _permit = self.permit("create_bucket", bucket).await?;
        match create.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => Err(classify("create_bucket", bucket, &e)),
        }
    }

    fn full_key(&self, key: &str) -> StoreResult<String> {
        validate_key(key)?;
        Ok(self.with_prefix(key))
    }

    fn with_prefix(&self, key: &str) -> String {
        if self.config.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.config.prefix)
        }
    }

    async fn permit(&self, op: &'static str, key: &str) -> StoreResult<SemaphorePermit<'_>> {
        self.permits
            .acquire()
            .await
            .map_err(|_| StoreError::Transient {
                op,
                key: key.to_string(),
                message: "store is shutting down".to_string(),
            })
    }

    /// One conditional PUT; `Ok(None)` means it collided with a concurrent write (409).
    async fn try_put_if_absent(
        &self,
        key: &str,
        full: &str,
        body: Bytes,
    ) -> StoreResult<Option<PutOutcome>> {
        let _permit = self.permit("put_if_absent", key).await?;
        let result = self
            .client
            .put_object()
            .bucket(&self.config.bucket)
            .key(full)
            .if_none_match("*")
            .body(ByteStream::from(body))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Some(PutOutcome::Created)),
            // Caveat: if an earlier SDK attempt of this same call stored the object but its
            // response was lost, this 412 is our own write and the caller hears AlreadyExists.
            // A caller that must know can compare the stored body with its own.
            Err(e) if status(&e) == Some(412) || e.code() == Some("PreconditionFailed") => {
                Ok(Some(PutOutcome::AlreadyExists))
            }
            Err(e) if status(&e) == Some(409) || e.code() == Some("ConditionalRequestConflict") => {
                Ok(None)
            }
            Err(e) => Err(classify("put_if_absent", key, &e)),
        }
    }

    async fn head_size(&self, op: &'static str, key: &str, full: &str) -> StoreResult<Option<u64>> {
        let _permit = self.permit(op, key).await?;
        let result = hedged(self.config.hedge_after, || {
            self.client
                .head_object()
                .bucket(&self.config.bucket)
                .key(full)
                .send()
        })
        .await;
        match result {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if is_missing_object(&e) => Ok(None),
            Err(e) => Err(classify(op, key, &e)),
        }
    }
}

/// The HTTP status of a failed call, if a response arrived.
fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// A 404 about the object rather than the bucket. HEAD responses carry no error body, so
/// a missing bucket there also reads as a missing object.
fn is_missing_object<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    status(err) == Some(404) && err.code() != Some("NoSuchBucket")
}

/// Maps an SDK error to a store error, deciding whether retrying may help.
fn classify<E>(op: &'static str, key: &str, err: &SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let key = key.to_string();
    let status = status(err);
    let code = err.code();
    let network = matches!(
        err,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    );
    let retryable_code = matches!(
        code,
        Some(
            "SlowDown"
                | "RequestTimeout"
                | "InternalError"
                | "ServiceUnavailable"
                | "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "OperationAborted"
                | "ConditionalRequestConflict"
        )
    );
    let retryable_status = matches!(status, Some(429 | 500 | 502 | 503 | 504));

    let message = match (code, status) {
        (Some(code), status) => {
            let mut m = code.to_string();
            if let Some(s) = status {
                m.push_str(&format!(" (HTTP {s})"));
            }
            if let Some(text) = err.message().filter(|t| !t.is_empty()) {
                m.push_str(": ");
                m.push_str(text);
            }
            m
        }
        (None, Some(s)) if !network => format!("HTTP {s}"),
        _ => {
            // The useful part (connection refused, timeout) is deep in the source chain;
            // DisplayErrorContext would append a long Debug dump as well.
            let mut chain = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(s) = source {
                chain.push_str(": ");
                chain.push_str(&s.to_string());
                source = s.source();
            }
            clip(chain, 300)
        }
    };

    if network || retryable_code || retryable_status {
        StoreError::Transient { op, key, message }
    } else {
        StoreError::Permanent { op, key, message }
    }
}

/// Cuts a message to about `max` bytes: a dispatch failure's chain can be long.
fn clip(mut message: String, max: usize) -> String {
    if message.len() > max {
        let mut end = max;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

fn body_error(op: &'static str, key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Transient {
        op,
        key: key.to_string(),
        message: format!("reading the response body: {e}"),
    }
}

/// Sends a read and, if it has not answered within `after`, the same read once more; the
/// first answer wins, and a failure waits for the other's answer. Only the request is
/// raced, up to its response's headers: the caller then reads the winner's body, so a
/// large read's transfer is never doubled. The loser is dropped, which closes its
/// connection. Both hold the caller's one permit: the second is brief and rare.
pub(crate) async fn hedged<T, E, F, Fut>(after: Option<Duration>, send: F) -> Result<T, E>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let first = send();
    let Some(after) = after else {
        return first.await;
    };
    tokio::pin!(first);
    tokio::select! {
        out = &mut first => return out,
        () = tokio::time::sleep(after) => {}
    }
    let second = send();
    tokio::pin!(second);
    tokio::select! {
        out = &mut first => match out {
            Ok(v) => Ok(v),
            Err(e) => second.await.or(Err(e)),
        },
        out = &mut second => match out {
            Ok(v) => Ok(v),
            Err(e) => first.await.or(Err(e)),
        },
    }
}

/// The total size from a `Content-Range: bytes */N` or `bytes a-b/N` header.
fn size_from_content_range(value: &str) -> Option<u64> {
    value.rsplit_once('/')?.1.trim().parse().ok()
}

#[async_trait::async_trait]
impl BlobStore for S3Store {
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        let full = self.full_key(key)?;
        let _permit = self.permit("get", key).await?;
        let result = hedged(self.config.hedge_after, || {
            self.client
                .get_object()
                .bucket(&self.config.bucket)
                .key(&full)
                .send()
        })
        .await;
        match result {
            Ok(out) => {
                let body = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| body_error("get", key, e))?;
                Ok(Some(body.into_bytes()))
            }
            Err(e) if is_missing_object(&e) => Ok(None),
            Err(e) => Err(classify("get", key, &e)),
        }
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Option<Bytes>> {
        let full = self.full_key(key)?;
        let invalid = |size| StoreError::InvalidRange {
            key: key.to_string(),
            start: range.start,
            end: range.end,
            size,
        };
        // An empty range has no `Range` header form (S3 would ignore `bytes=5-4` and send
        // everything), so existence and bounds come from a HEAD instead.
        if range.start >= range.end {
            return match self.head_size("get_range", key, &full).await? {
                None => Ok(None),
                Some(size) if range.start > size || range.start > range.end => Err(invalid(size)),
                Some(_) => Ok(Some(Bytes::new())),
            };
        }

        let result = {
            let _permit = self.permit("get_range", key).await?;
            let header = format!("bytes={}-{}", range.start, range.end - 1);
            let result = hedged(self.config.hedge_after, || {
                self.client
                    .get_object()
                    .bucket(&self.config.bucket)
                    .key(&full)
                    .range(&header)
                    .send()
            })
            .await;
            match result {
                Ok(out) => {
                    let ranged = out.content_range().is_some();
                    let body = out
                        .body
                        .collect()
                        .await
                        .map_err(|e| body_error("get_range", key, e))?
                        .into_bytes();
                    Ok((ranged, body))
                }
                Err(e) => Err(e),
            }
        };

        match result {
            Ok((true, body)) => Ok(Some(body)),
            Ok((false, whole)) => {
                // A server that ignores `Range` sends the whole object with a 200.
                let size = whole.len() as u64;
                if range.start > size {
                    return Err(invalid(size));
                }
                let end = range.end.min(size);
                Ok(Some(whole.slice(range.start as usize..end as usize)))
            }
            Err(e) if is_missing_object(&e) => Ok(None),
            Err(e) if status(&e) == Some(416) || e.code() == Some("InvalidRange") => {
                // S3 refuses a start at or past the end; only "past" is an error here.
                let from_header = e
                    .raw_response()
                    .and_then(|r| r.headers().get("content-range"))
                    .and_then(size_from_content_range);
                let size = match from_header {
                    Some(size) => Some(size),
                    None => self.head_size("get_range", key, &full).await?,
                };
                match size {
                    None => Ok(None),
                    Some(size) if range.start > size => Err(invalid(size)),
                    Some(_) => Ok(Some(Bytes::new())),
                }
            }
            Err(e) => Err(classify("get_range", key, &e)),
        }
    }

    async fn size(&self, key: &str) -> StoreResult<Option<u64>> {
        let full = self.full_key(key)?;
        self.head_size("size", key, &full).await
    }

    async fn put(&self, key: &str, body: Bytes) -> StoreResult<()> {
        let full = self.full_key(key)?;
        let _permit = self.permit("put", key).await?;
        self.client
            .put_object()
            .bucket(&self.config.bucket)
            .key(&full)
            .body(ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("put", key, &e))
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> StoreResult<PutOutcome> {
        let full = self.full_key(key)?;
        // S3 answers 409 when another conditional write of the key is in progress; it
        // settles quickly, after which the object exists (412 next time) or the other
        // write failed and this one may still win.
        let mut backoff = Duration::from_millis(25);
        for attempt in 0..=CONFLICT_RETRIES {
            if let Some(outcome) = self.try_put_if_absent(key, &full, body.clone()).await? {
                return Ok(outcome);
            }
            if attempt == CONFLICT_RETRIES {
                break;
            }
            let jitter = Duration::from_millis(rand::random::<u64>() % 25);
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(Duration::from_millis(800));
            if self.head_size("put_if_absent", key, &full).await?.is_some() {
                return Ok(PutOutcome::AlreadyExists);
            }
        }
        Err(StoreError::Transient {
            op: "put_if_absent",
            key: key.to_string(),
            message: format!(
                "ConditionalRequestConflict (HTTP 409) persisted over {} attempts",
                CONFLICT_RETRIES + 1
            ),
        })
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
        validate_prefix(prefix)?;
        let full_prefix = self.with_prefix(prefix);
        // Without a store prefix, with_prefix("") is "": list the whole bucket. With one,
        // it is "<prefix>/", so sibling prefixes like "<prefix>x/" never leak in.
        let strip = if self.config.prefix.is_empty() {
            0
        } else {
            self.config.prefix.len() + 1
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .set_prefix((!full_prefix.is_empty()).then_some(full_prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        loop {
            let page = {
                let _permit = self.permit("list", prefix).await?;
                pages.next().await
            };
            let page = match page {
                None => break,
                Some(Ok(page)) => page,
                Some(Err(e)) => return Err(classify("list", prefix, &e)),
            };
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.get(strip..)) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    modified: object
                        .last_modified()
                        .and_then(|t| t.to_millis().ok())
                        .map(|ms| ms.max(0) as u64),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let full = self.full_key(key)?;
        let _permit = self.permit("delete", key).await?;
        let result = self
            .client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(&full)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // S3 answers 204 for a missing key; some compatible servers answer 404.
            Err(e) if is_missing_object(&e) => Ok(()),
            Err(e) => Err(classify("delete", key, &e)),
        }
    }

    async fn presign_get(&self, key: &str, expires: Duration) -> StoreResult<String> {
        let full = self.full_key(key)?;
        let presigning =
            PresigningConfig::expires_in(expires).map_err(|e| StoreError::Permanent {
                op: "presign_get",
                key: key.to_string(),
                message: e.to_string(),
            })?;
        // Signing is local: no request, so no permit.
        let request = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(&full)
            .presigned(presigning)
            .await
            .map_err(|e| classify("presign_get", key, &e))?;
        Ok(request.uri().to_string())
    }

    async fn start_upload(&self, key: &str) -> StoreResult<Arc<dyn Upload>> {
        let full = self.full_key(key)?;
        let _permit = self.permit("start_upload", key).await?;
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| classify("start_upload", key, &e))?;
        let upload_id =
            out.upload_id()
                .map(str::to_string)
                .ok_or_else(|| StoreError::Permanent {
                    op: "start_upload",
                    key: key.to_string(),
                    message: "the server returned no upload id".into(),
                })?;
        Ok(Arc::new(S3Upload {
            client: self.client.clone(),
            permits: self.permits.clone(),
            bucket: self.config.bucket.clone(),
            key: key.to_string(),
            full,
            upload_id,
            etags: Mutex::new(BTreeMap::new()),
        }))
    }

    fn describe(&self) -> String {
        if self.config.prefix.is_empty() {
            format!("s3://{}", self.config.bucket)
        } else {
            format!("s3://{}/{}", self.config.bucket, self.config.prefix)
        }
    }
}

/// An S3 multipart upload.
#[derive(Debug)]
struct S3Upload {
    client: Client,
    permits: Arc<Semaphore>,
    bucket: String,
    key: String,
    full: String,
    upload_id: String,
    etags: Mutex<BTreeMap<u32, String>>,
}

impl S3Upload {
    async fn permit(&self, op: &'static str) -> StoreResult<tokio::sync::SemaphorePermit<'_>> {
        self.permits
            .acquire()
            .await
            .map_err(|_| StoreError::Transient {
                op,
                key: self.key.clone(),
                message: "store is shutting down".to_string(),
            })
    }
}

#[async_trait::async_trait]
impl Upload for S3Upload {
    async fn put_part(&self, number: u32, _offset: u64, body: Bytes) -> StoreResult<()> {
        let _permit = self.permit("put_part").await?;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.full)
            .upload_id(&self.upload_id)
            .part_number(number as i32)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| classify("put_part", &self.key, &e))?;
        let etag = out.e_tag().unwrap_or_default().to_string();
        self.etags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(number, etag);
        Ok(())
    }

    async fn complete(&self, parts: u32) -> StoreResult<()> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let completed: Vec<CompletedPart> = {
            let etags = self
                .etags
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (1..=parts)
                .map(|n| {
                    etags.get(&n).map(|tag| {
                        CompletedPart::builder()
                            .part_number(n as i32)
                            .e_tag(tag)
                            .build()
                    })
                })
                .collect::<Option<_>>()
                .ok_or_else(|| StoreError::Permanent {
                    op: "complete_upload",
                    key: self.key.clone(),
                    message: format!("not every one of {parts} parts was written"),
                })?
        };
        let _permit = self.permit("complete_upload").await?;
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.full)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("complete_upload", &self.key, &e))
    }

    async fn abort(&self) -> StoreResult<()> {
        let _permit = self.permit("abort_upload").await?;
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.full)
            .upload_id(&self.upload_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("abort_upload", &self.key, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_read_is_sent_once_more_and_the_first_answer_wins() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let after = Some(Duration::from_millis(20));
        // The first copy hangs: the second answers.
        let sent = AtomicUsize::new(0);
        let started = std::time::Instant::now();
        let out: Result<usize, ()> = hedged(after, || {
            let n = sent.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
                Ok(n)
            }
        })
        .await;
        assert_eq!(out, Ok(1));
        assert_eq!(sent.load(Ordering::SeqCst), 2);
        assert!(started.elapsed() < Duration::from_secs(5));
        // A quick answer: sent once.
        let sent = AtomicUsize::new(0);
        let out: Result<usize, ()> = hedged(after, || {
            let n = sent.fetch_add(1, Ordering::SeqCst);
            async move { Ok(n) }
        })
        .await;
        assert_eq!((out, sent.load(Ordering::SeqCst)), (Ok(0), 1));
        // The first copy fails after the second went out: the second's answer counts.
        let sent = AtomicUsize::new(0);
        let out: Result<usize, &str> = hedged(after, || {
            let n = sent.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(if n == 0 { 40 } else { 80 })).await;
                if n == 0 { Err("503") } else { Ok(n) }
            }
        })
        .await;
        assert_eq!(out, Ok(1));
        // Both fail: the error.
        let out: Result<usize, &str> = hedged(after, || async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Err("503")
        })
        .await;
        assert_eq!(out, Err("503"));
        // Hedging off: a slow read is sent once.
        let sent = AtomicUsize::new(0);
        let out: Result<usize, ()> = hedged(None, || {
            let n = sent.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(40)).await;
                Ok(n)
            }
        })
        .await;
        assert_eq!((out, sent.load(Ordering::SeqCst)), (Ok(0), 1));
    }

    #[test]
    fn content_range_sizes() {
        assert_eq!(size_from_content_range("bytes */1234"), Some(1234));
        assert_eq!(size_from_content_range("bytes 0-9/20"), Some(20));
        assert_eq!(size_from_content_range("bytes 0-9/*"), None);
        assert_eq!(size_from_content_range("garbage"), None);
    }

    #[test]
    fn credentials_are_not_printed() {
        let config = S3Config::new("b", "p").with_credentials("AKID", "very-secret");
        let shown = format!("{config:?}");
        assert!(shown.contains("AKID"));
        assert!(!shown.contains("very-secret"), "{shown}");
    }
}
