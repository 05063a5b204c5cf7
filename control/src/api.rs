//! The local control socket's JSON API.
//!
//! A Unix stream socket (`control_socket` in the config, mode 0600). The client writes
//! one request line and reads one response line, both JSON:
//!
//! ```text
//! → {"request":"status"}          status | neighbors | routes | adverts
//! ← {"ok":true,"data":{...}}      or {"ok":false,"error":"..."}
//! ```
//!
//! `data` by request:
//! - `status`: `node` (hex key), `uptime_s`, `seq` (last advert sequence number),
//!   `cert` {`not_before`, `not_after`, `valid`, `error`}, `interfaces`
//!   [{`name`, `ifindex`, `up`}], `neighbours`, `routes`, `adverts` (counts),
//!   `lsdb` {`accepted`, `duplicates`, `purged`, `rejected` {reason: n}},
//!   `hellos_rejected` {reason: n}, `datapath` {counter: packets}, `lanes`
//!   [{`interface`, `mode` (admission | edt_fq | edt_etf | failed), `mode_detail`,
//!   `error` (when failed), `attach` (pinned | replaced | unpinned), `reused_pins`,
//!   `pin_dir`, `plan_switch_tai_ns` (null: the plan in force was already this one),
//!   `configured_in_force`, `schedule` {`base_time_ns`, `cycle_ns`, `link_rate_bps`,
//!   `entries` [{`gates`, `interval_ns`}]} (the plan in force), `counters` {`lanes`
//!   {lane: {action: {`packets`, `bytes`}}}, `no_plan` {`packets`, `bytes`}}}].
//! - `neighbors`: [{`iface`, `node`, `mac`, `addr`, `df`, `dr`, `etx`, `snr_db`,
//!   `snr_slope_db_s`, `cost`}] (cost in 1/256 ETX units, null when one-way).
//! - `routes`: [{`prefix`, `origin`, `metric`, `via` {`kind`: local|neighbour,
//!   `primary`, `alternate`}, `iface`, `mac`, `installed`}] (`installed`: written to the
//!   datapath; false during the start-up hold or when the next hop is unknown).
//! - `adverts`: [{`origin`, `seq`, `expires`, `cert_not_after`, `links`
//!   [{`neighbour`, `cost`}], `prefixes`}].
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Query {
    Status,
    Neighbors,
    Routes,
    Adverts,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub request: Query,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Longest request line accepted, bytes.
pub const MAX_REQUEST: usize = 4096;

/// Asks the daemon at `socket` and returns `data`.
pub async fn query(socket: &Path, q: Query) -> anyhow::Result<serde_json::Value> {
    let s = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| {
            format!(
                "connect to {}; is \"dcmesh run\" running (and is this its control_socket)?",
                socket.display()
            )
        })?;
    let (r, mut w) = s.into_split();
    let mut line = serde_json::to_string(&Request { request: q })?;
    line.push('\n');
    w.write_all(line.as_bytes()).await?;
    let mut resp = String::new();
    BufReader::new(r).read_line(&mut resp).await?;
    let resp: Response = serde_json::from_str(&resp).context("daemon sent a malformed response")?;
    if !resp.ok {
        bail!("daemon: {}", resp.error.unwrap_or_default());
    }
    Ok(resp.data.unwrap_or(serde_json::Value::Null))
}

/// Parses a request line (bounded, never panics).
pub fn parse_request(line: &str) -> Result<Query, String> {
    if line.len() > MAX_REQUEST {
        return Err(format!("request longer than {MAX_REQUEST} bytes"));
    }
    serde_json::from_str::<Request>(line.trim())
        .map(|r| r.request)
        .map_err(|e| {
            format!(
                "bad request ({e}); expected {{\"request\":\"status|neighbors|routes|adverts\"}}"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_explain() {
        assert_eq!(
            parse_request("{\"request\":\"routes\"}\n"),
            Ok(Query::Routes)
        );
        assert!(parse_request("{\"request\":\"reboot\"}")
            .unwrap_err()
            .contains("expected"));
        assert!(parse_request(&"x".repeat(MAX_REQUEST + 1)).is_err());
    }
}
