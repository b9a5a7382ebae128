//! SigV4 signing of API calls, for a deployed API behind IAM auth (the template's
//! default): each call is signed for the `execute-api` service with the caller's AWS
//! credentials, found the way the AWS CLI finds them (environment, profile, SSO, role).
//! Result downloads are presigned S3 URLs and are not signed again.

use std::time::SystemTime;

use anyhow::{Context, bail};
use aws_config::BehaviorVersion;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use reqwest::Url;

/// Signs requests for one region.
#[derive(Debug, Clone)]
pub struct Signer {
    credentials: SharedCredentialsProvider,
    region: String,
}

impl Signer {
    /// A signer with the standard AWS credential chain. The region is `region` if given,
    /// else the one in an API Gateway host name (`{id}.execute-api.{region}.amazonaws.com`),
    /// else the AWS environment's.
    pub async fn from_env(base: &Url, region: Option<String>) -> anyhow::Result<Signer> {
        let config = aws_config::load_defaults(BehaviorVersion::latest()).await;
        let region = region
            .or_else(|| region_of(base))
            .or_else(|| config.region().map(|r| r.to_string()));
        let Some(region) = region else {
            bail!("--sigv4 needs a region: give --region, or set AWS_REGION");
        };
        let credentials = config
            .credentials_provider()
            .context("--sigv4: no AWS credentials are configured")?;
        Ok(Signer {
            credentials,
            region,
        })
    }

    /// A signer with fixed credentials.
    #[cfg(test)]
    pub fn with_credentials(credentials: aws_credential_types::Credentials, region: &str) -> Self {
        Signer {
            credentials: SharedCredentialsProvider::new(credentials),
            region: region.to_string(),
        }
    }

    /// The headers that sign `method url` with `body` (and `headers`, which are signed
    /// too): `authorization`, `x-amz-date`, and `x-amz-security-token` for temporary
    /// credentials.
    pub async fn headers(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Vec<(String, String)>> {
        self.headers_at(method, url, headers, body, SystemTime::now())
            .await
    }

    async fn headers_at(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        body: &[u8],
        time: SystemTime,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .context("--sigv4: cannot get AWS credentials")?;
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("execute-api")
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .context("--sigv4: signing parameters")?
            .into();
        let signable = SignableRequest::new(
            method,
            url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .context("--sigv4: the request cannot be signed")?;
        let (instructions, _) = sign(signable, &params)
            .context("--sigv4: signing failed")?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect())
    }
}

/// The region in an API Gateway host name.
fn region_of(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    let rest = host.split_once(".execute-api.")?.1;
    let region = rest.split('.').next()?;
    (!region.is_empty()).then(|| region.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_an_api_gateway_host() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            region_of(&url("https://abc123.execute-api.eu-west-2.amazonaws.com/")),
            Some("eu-west-2".into())
        );
        assert_eq!(region_of(&url("http://127.0.0.1:8080/")), None);
    }

    #[tokio::test]
    async fn signed_headers_carry_the_key_the_region_and_the_service() {
        let creds =
            aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let signer = Signer::with_credentials(creds, "us-east-1");
        let url = Url::parse("https://abc.execute-api.us-east-1.amazonaws.com/v1/matrix").unwrap();
        let headers = signer.headers("POST", &url, &[], b"{}").await.unwrap();
        let auth = &headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .expect("an authorization header")
            .1;
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(
            auth.contains("/us-east-1/execute-api/aws4_request"),
            "{auth}"
        );
        assert!(headers.iter().any(|(n, _)| n == "x-amz-date"));
        assert!(!headers.iter().any(|(n, _)| n == "x-amz-security-token"));
    }

    /// The signature, recomputed independently by botocore (in the test venv, which
    /// `scripts/test` prepares) from the same request, key and time.
    #[tokio::test]
    async fn botocore_computes_the_same_signature() {
        let python = std::env::var("CELLMATRIX_TEST_PYTHON")
            .expect("CELLMATRIX_TEST_PYTHON is not set: run the tests with scripts/test");
        let creds = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session-token".into()),
            None,
            "test",
        );
        let signer = Signer::with_credentials(creds, "eu-west-2");
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        for (method, url, body) in [
            (
                "POST",
                "https://abc.execute-api.eu-west-2.amazonaws.com/v1/matrix",
                r#"{"format":"h5ad"}"#,
            ),
            (
                "GET",
                "https://abc.execute-api.eu-west-2.amazonaws.com/v1/matrix/5f0c-9a7e",
                "",
            ),
        ] {
            let url = Url::parse(url).unwrap();
            let content_type = [("content-type", "application/json")];
            let signed: &[(&str, &str)] = if body.is_empty() { &[] } else { &content_type };
            let headers = signer
                .headers_at(method, &url, signed, body.as_bytes(), time)
                .await
                .unwrap();
            let spec = serde_json::json!({
                "method": method, "url": url.as_str(), "body": body,
                "headers": signed.iter().map(|(n, v)| (n.to_string(), v.to_string()))
                    .chain(headers.iter().filter(|(n, _)| n != "authorization").cloned())
                    .collect::<std::collections::BTreeMap<_, _>>(),
            });
            let out = std::process::Command::new(&python)
                .args(["-c", BOTOCORE_SIGN, &spec.to_string()])
                .output()
                .expect("python runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let theirs = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let ours = &headers
                .iter()
                .find(|(n, _)| n == "authorization")
                .unwrap()
                .1;
            assert_eq!(ours, &theirs, "{method} {url}");
        }
    }

    const BOTOCORE_SIGN: &str = r#"
import json, sys
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
spec = json.loads(sys.argv[1])
request = AWSRequest(method=spec["method"], url=spec["url"], data=spec["body"].encode(),
                     headers=spec["headers"])
request.context["timestamp"] = spec["headers"]["x-amz-date"]
auth = SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                             "session-token"), "execute-api", "eu-west-2")
canonical = auth.canonical_request(request)
signature = auth.signature(auth.string_to_sign(request, canonical), request)
print(f"AWS4-HMAC-SHA256 Credential={auth.scope(request)}, "
      f"SignedHeaders={auth.signed_headers(auth.headers_to_sign(request))}, Signature={signature}")
"#;
}
