//! `dcmesh run`: the daemon. Effects live here; decisions are made by the pure modules.
//!
//! Timers (all from the config):
//! - every `hello_interval_ms`: a hello on each interface that has carrier; SNR sources
//!   are read; the certificate file is re-read if it changed; expired adverts are
//!   purged; routes are recomputed if anything changed.
//! - the moment a neighbour has been silent for `dead_interval_ms` plus its stagger (our
//!   rank among its neighbours × `loss_stagger_ms`, at most 8 ranks: see "Ordered loss
//!   detection" in `neighbour`), it is dropped.
//! - carrier loss (rtnetlink link event): that interface's neighbours are dropped at once.
//! - an advert is originated when our links change (a neighbour comes or goes, or a cost
//!   moves by more than 1/8), and at least every `advert_refresh_s`.
//! - adverts are originated, and routes written to the datapath, only after
//!   `dead_interval_ms` from start: a restarted daemon keeps the pinned routes
//!   forwarding, and its previous advert standing, until it knows its neighbours, so a
//!   crash and restart within the dead interval loses no transit traffic.
//! - losing a neighbour we forward through marks its next hop down at once (alternates
//!   take over), and holds our route changes (also when the cost of a link we forward
//!   over rises) for `local_convergence_delay_ms`
//!   (microloop avoidance, see `microloop`); the hold is checked every tick.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{Ipv6Addr, SocketAddr, SocketAddrV6},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context};
use dcmesh_loader::{AttachMode, Datapath, NextHopSpec};
use serde_json::json;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader},
    net::UdpSocket,
    sync::{mpsc, oneshot},
};

use crate::{
    api::{self, Query},
    cert::{CertCache, Certificate},
    config::{Config, ExitRoutes, SnrSource, XdpMode},
    decision::{NhKey, Target, Writer},
    fib::{Fib, KernelNextHop, LinkEvent},
    identity::{Identity, NodeId},
    lsdb::{Accepted, Lsdb, LsdbConfig, Reject},
    metrics::{LinkLabels, Metrics, ReasonLabels},
    microloop::{self, Hold},
    neighbour::{Link, Neighbours},
    spf::{self, NodeInput, PrefixRoute, Topology, Via},
    wire::{self, AdvLink, Advert, Hello, Message},
};

/// Link-local multicast group of hellos and adverts (ff02::114, "any private
/// experiment"; change with care: every node must agree).
pub const GROUP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x114);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Iface {
    name: String,
    index: u32,
    mac: [u8; 6],
    mtu: u16,
    up: bool,
    sock: Arc<UdpSocket>,
    hello_seq: u16,
    snr: SnrSource,
}

enum Event {
    Packet {
        iface: usize,
        src: SocketAddr,
        data: Vec<u8>,
    },
    Control(Query, oneshot::Sender<Result<serde_json::Value, String>>),
}

struct OwnCert {
    cert: Certificate,
    bytes: Vec<u8>,
    mtime: Option<SystemTime>,
    error: Option<String>,
}

/// The daemon's state, owned by the main loop.
struct Daemon {
    cfg: Config,
    me: Identity,
    my_id: NodeId,
    own: OwnCert,
    ifaces: Vec<Iface>,
    nbrs: Neighbours,
    /// The nl80211 SNR poller, when an interface uses it.
    snr_nl80211: Option<crate::snr_nl80211::Nl80211Snr>,
    lsdb: Lsdb,
    hello_certs: CertCache,
    own_certs: CertCache,
    hello_rejects: HashMap<Reject, u64>,
    /// When we last sent our database to a neighbour (interface, node), ms.
    synced: HashMap<(usize, NodeId), u64>,
    seq: u64,
    seq_path: PathBuf,
    advertised: BTreeMap<NodeId, u32>,
    last_origination: Option<Instant>,
    routes: Vec<PrefixRoute>,
    datapath: Datapath,
    writer: Writer,
    /// Microloop avoidance: our route changes wait while the mesh converges on a loss.
    hold: Hold,
    /// Next hops whose link cost rose since the hold started.
    worse: BTreeSet<NhKey>,
    /// The topology of the previous route computation, and the one from before the hold
    /// started (what neighbours that also hold still forward on).
    prev_topo: Option<Topology>,
    hold_topo: Option<Topology>,
    fib: Option<Fib>,
    /// TSN lanes (pinned; they outlive the daemon).
    lanes: crate::lanes::LaneManager,
    metrics: Arc<Mutex<Metrics>>,
    start: Instant,
    dirty: bool,
    last_cert_shout: Option<Instant>,
}

fn attach_mode(m: XdpMode) -> AttachMode {
    match m {
        XdpMode::Auto => AttachMode::Auto,
        XdpMode::Native => AttachMode::Native,
        XdpMode::Generic => AttachMode::Generic,
    }
}

fn mesh_socket(name: &str, index: u32, port: u16) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    s.bind_device(Some(name.as_bytes()))
        .with_context(|| format!("bind a socket to interface \"{name}\""))?;
    s.set_multicast_if_v6(index)?;
    s.set_multicast_loop_v6(false)?;
    s.set_multicast_hops_v6(1)?;
    s.join_multicast_v6(&GROUP, index)
        .with_context(|| format!("join {GROUP} on \"{name}\" (is IPv6 enabled on it?)"))?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0).into())
        .with_context(|| format!("bind UDP port {port} on \"{name}\""))?;
    Ok(UdpSocket::from_std(s.into())?)
}

/// Reads the sequence number file (0 if absent).
fn load_seq(path: &std::path::Path) -> anyhow::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(s) => s.trim().parse().with_context(|| {
            format!(
                "{}: not a sequence number; remove it only if you also wait out advert_lifetime_s",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Persists `seq` (write, fsync, rename) before any advert carrying it leaves.
fn store_seq(path: &std::path::Path, seq: u64) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{seq}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn read_cert(cfg: &Config, me: &NodeId) -> anyhow::Result<OwnCert> {
    let cert = Certificate::load(&cfg.certificate)?;
    if cert.node != *me {
        bail!(
            "certificate {} is for node {}, but key {} is node {}; issue one for this key",
            cfg.certificate.display(),
            cert.node,
            cfg.key.display(),
            me
        );
    }
    for (i, p) in cfg.prefixes.iter().enumerate() {
        if !cert.grants(p) {
            bail!(
                "config field `prefixes[{i}]`: {p} is not granted by certificate {} (grants {:?})",
                cfg.certificate.display(),
                cert.prefixes
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
            );
        }
    }
    let mtime = std::fs::metadata(&cfg.certificate)
        .and_then(|m| m.modified())
        .ok();
    let error = cert
        .verify(&cfg.authorities, unix_now())
        .err()
        .map(|e| e.to_string());
    Ok(OwnCert {
        bytes: cert.encode(),
        cert,
        mtime,
        error,
    })
}

/// Runs the daemon until SIGINT or SIGTERM.
pub fn run(cfg: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(cfg))
}

async fn run_async(cfg: Config) -> anyhow::Result<()> {
    let me = Identity::load(&cfg.key)?;
    let my_id = me.id();
    let own = read_cert(&cfg, &my_id)?;
    if let Some(e) = &own.error {
        log::error!(
            "OWN CERTIFICATE NOT VALID: {e}. Neighbours will ignore this node until {} is renewed.",
            cfg.certificate.display()
        );
    }
    crate::snr_nl80211::check_start(&cfg).await?;
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("create state_dir {}", cfg.state_dir.display()))?;
    let seq_path = cfg.state_dir.join("advert-seq");
    let seq = load_seq(&seq_path)?;

    let mut ifaces = Vec::new();
    for ic in &cfg.interfaces {
        let info = dcmesh_loader::interface_info(&ic.name)?;
        let sock = mesh_socket(&ic.name, info.index, cfg.port)?;
        ifaces.push(Iface {
            name: ic.name.clone(),
            index: info.index,
            mac: info.mac,
            mtu: info.mtu,
            up: true,
            sock: Arc::new(sock),
            hello_seq: rand_u16(),
            snr: ic.snr.clone(),
        });
    }
    // A first hello before the slow part of the start (loading, verifying and attaching
    // the datapath program: hundreds of ms on a busy host): a restarted controller is
    // heard again well inside its neighbours' dead interval, so they keep forwarding
    // through it (its pinned datapath never stopped) instead of routing around it.
    for f in &mut ifaces {
        f.hello_seq = f.hello_seq.wrapping_add(1);
        let h = Hello {
            node: my_id,
            mac: f.mac,
            seq: f.hello_seq,
            interval_ms: cfg.hello_interval_ms.min(u64::from(u16::MAX)) as u16,
            cert: own.bytes.clone(),
            heard: Vec::new(),
        };
        if let Ok(raw) = h.encode(|m| me.sign(m)) {
            let to = SocketAddrV6::new(GROUP, cfg.port, 0, f.index);
            if let Err(e) = f.sock.send_to(&raw, to).await {
                log::debug!("{}: first hello: {e}", f.name);
            }
        }
    }
    let t_load = Instant::now();
    let mut datapath = Datapath::load(Some(&cfg.pin_dir)).context("load the XDP datapath")?;
    for f in &ifaces {
        let how = datapath.attach(&f.name, attach_mode(cfg.xdp_mode))?;
        log::info!("{}: XDP datapath {:?}", f.name, how);
    }
    log::info!(
        "datapath loaded and attached in {} ms",
        t_load.elapsed().as_millis()
    );
    let lanes = crate::lanes::LaneManager::start(&cfg.pin_dir, &cfg.lanes);
    let tables = datapath.tables();
    let existing_nh = tables
        .nexthops()
        .into_iter()
        .map(|(id, n)| {
            (
                id,
                NextHopSpec {
                    ifindex: n.ifindex,
                    src_mac: n.src_mac,
                    dst_mac: n.dst_mac,
                    mtu: n.mtu,
                },
            )
        })
        .collect();
    let mut writer = Writer::adopt(existing_nh, tables.routes()?);
    writer.adopt_down(
        tables
            .nexthops()
            .into_iter()
            .filter(|(_, n)| n.flags & dcmesh_schema::NH_F_DOWN != 0)
            .map(|(id, _)| id),
    );
    let fib = if cfg.kernel_routes {
        Some(Fib::open(cfg.route_protocol).await.context("rtnetlink")?)
    } else {
        None
    };
    let mut links = crate::fib::watch_links().context("rtnetlink link events")?;

    let metrics = Arc::new(Mutex::new(Metrics::new()));
    if let Some(addr) = cfg.metrics_listen {
        crate::metrics::serve(addr, metrics.clone()).await?;
    }
    let snr_nl80211 = metrics.lock().ok().and_then(|mut m| {
        let idx: Vec<u32> = ifaces.iter().map(|f| f.index).collect();
        crate::snr_nl80211::Nl80211Snr::start(&cfg, &idx, &mut m.registry)
    });
    let (tx, mut rx) = mpsc::channel::<Event>(4096);
    for (i, f) in ifaces.iter().enumerate() {
        let sock = f.sock.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; wire::MAX_DATAGRAM + 1];
            loop {
                match sock.recv_from(&mut buf).await {
                    Ok((n, src)) => {
                        let ev = Event::Packet {
                            iface: i,
                            src,
                            data: buf[..n].to_vec(),
                        };
                        if tx.send(ev).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => log::debug!("recv: {e}"),
                }
            }
        });
    }
    serve_control(&cfg.control_socket, tx.clone())?;

    let lsdb = Lsdb::new(LsdbConfig {
        authorities: cfg.authorities.clone(),
        max_lifetime_s: cfg.max_advert_lifetime_s,
    });
    let lcd_ms = cfg.local_convergence_delay_ms;
    let mut d = Daemon {
        nbrs: Neighbours::new(ifaces.len(), cfg.dead_interval_ms),
        cfg,
        me,
        my_id,
        own,
        ifaces,
        snr_nl80211,
        lsdb,
        hello_certs: CertCache::default(),
        own_certs: CertCache::default(),
        hello_rejects: HashMap::new(),
        synced: HashMap::new(),
        seq,
        seq_path,
        advertised: BTreeMap::new(),
        last_origination: None,
        routes: Vec::new(),
        datapath,
        writer,
        hold: Hold::new(lcd_ms),
        worse: BTreeSet::new(),
        prev_topo: None,
        hold_topo: None,
        fib,
        lanes,
        metrics,
        start: Instant::now(),
        dirty: true,
        last_cert_shout: None,
    };
    log::info!(
        "dcmesh node {} on {} interface(s), advert seq {}",
        d.my_id,
        d.ifaces.len(),
        d.seq
    );

    let mut tick = tokio::time::interval(Duration::from_millis(d.cfg.hello_interval_ms));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let t0 = Instant::now();
                d.on_tick().await;
                let took = t0.elapsed();
                if took > Duration::from_millis(d.cfg.hello_interval_ms / 2) {
                    log::warn!("periodic work took {} ms (hello interval {} ms): the host is overloaded", took.as_millis(), d.cfg.hello_interval_ms);
                }
            }
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let mut batch = vec![ev];
                while batch.len() < 256 {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                d.on_events(batch).await;
            }
            ev = links.recv() => {
                if let Some(ev) = ev { d.on_link(ev).await; }
            }
            _ = tokio::time::sleep_until(d.next_expiry()) => d.on_expiry().await,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    let lanes_note = if d.lanes.is_empty() {
        ""
    } else {
        ", the TSN lanes stay enforced"
    };
    match (d.fib.as_mut(), d.cfg.kernel_routes_on_exit) {
        (Some(f), ExitRoutes::Remove) => {
            log::info!(
                "shutting down: removing dcmesh kernel routes (the XDP datapath keeps forwarding{lanes_note})"
            );
            f.flush().await;
        }
        (Some(f), ExitRoutes::Retain) => log::info!(
            "shutting down: keeping {} kernel route(s) of protocol {} for the next start \
             (kernel_routes_on_exit = \"retain\"); the XDP datapath keeps forwarding{lanes_note}",
            f.installed().len(),
            d.cfg.route_protocol
        ),
        (None, _) => {
            log::info!("shutting down (the XDP datapath keeps forwarding{lanes_note})")
        }
    }
    let _ = std::fs::remove_file(&d.cfg.control_socket);
    Ok(())
}

fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    u16::from_be_bytes(b)
}

fn serve_control(path: &std::path::Path, tx: mpsc::Sender<Event>) -> anyhow::Result<()> {
    if path.exists() {
        std::fs::remove_file(path)
            .with_context(|| format!("remove stale control socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let l = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("control_socket {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut line = String::new();
                let mut r = BufReader::new(r).take(api::MAX_REQUEST as u64 + 1);
                if r.read_line(&mut line).await.is_err() {
                    return;
                }
                let resp = match api::parse_request(&line) {
                    Err(e) => api::Response {
                        ok: false,
                        data: None,
                        error: Some(e),
                    },
                    Ok(q) => {
                        let (otx, orx) = oneshot::channel();
                        if tx.send(Event::Control(q, otx)).await.is_err() {
                            return;
                        }
                        match orx.await {
                            Ok(Ok(v)) => api::Response {
                                ok: true,
                                data: Some(v),
                                error: None,
                            },
                            Ok(Err(e)) => api::Response {
                                ok: false,
                                data: None,
                                error: Some(e),
                            },
                            Err(_) => return,
                        }
                    }
                };
                let mut out = serde_json::to_string(&resp).unwrap_or_default();
                out.push('\n');
                let _ = w.write_all(out.as_bytes()).await;
            });
        }
    });
    Ok(())
}

impl Daemon {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    async fn send(&self, i: usize, data: &[u8]) -> bool {
        let f = &self.ifaces[i];
        if !f.up {
            return false;
        }
        let to = SocketAddrV6::new(GROUP, self.cfg.port, 0, f.index);
        match f.sock.send_to(data, to).await {
            Ok(_) => true,
            Err(e) => {
                log::debug!("{}: send: {e}", f.name);
                false
            }
        }
    }

    async fn send_hello(&mut self, i: usize) {
        let f = &mut self.ifaces[i];
        f.hello_seq = f.hello_seq.wrapping_add(1);
        let h = Hello {
            node: self.my_id,
            mac: f.mac,
            seq: f.hello_seq,
            interval_ms: self.cfg.hello_interval_ms.min(u64::from(u16::MAX)) as u16,
            cert: self.own.bytes.clone(),
            heard: self.nbrs.heard(i),
        };
        match h.encode(|m| self.me.sign(m)) {
            Ok(raw) => {
                self.send(i, &raw).await;
            }
            Err(e) => log::error!("encode hello: {e}"),
        }
    }

    async fn flood(&self, raw: &[u8]) {
        for i in 0..self.ifaces.len() {
            if self.send(i, raw).await {
                if let Ok(m) = self.metrics.lock() {
                    m.adverts_sent.inc();
                }
            }
        }
    }

    fn reject_hello(&mut self, r: Reject) {
        *self.hello_rejects.entry(r).or_default() += 1;
        if let Ok(m) = self.metrics.lock() {
            m.hellos_rejected
                .get_or_create(&ReasonLabels {
                    reason: r.name().into(),
                })
                .inc();
        }
    }

    async fn on_hello(&mut self, i: usize, src: SocketAddr, s: wire::Signed<Hello>) {
        let h = &s.body;
        if h.node == self.my_id {
            return;
        }
        let now_s = unix_now();
        let cert = match self
            .hello_certs
            .verify(&h.cert, &self.cfg.authorities, now_s)
        {
            Ok(c) => c,
            Err(e) => return self.reject_hello(Reject::from(e)),
        };
        if cert.node != h.node {
            return self.reject_hello(Reject::CertMismatch);
        }
        if !crate::identity::verify(&h.node, s.signed_part(), &s.signature()) {
            return self.reject_hello(Reject::BadSignature);
        }
        let addr = match src {
            SocketAddr::V6(a) => *a.ip(),
            SocketAddr::V4(_) => return self.reject_hello(Reject::Malformed),
        };
        let now = self.now_ms();
        let outcome = self
            .nbrs
            .on_hello(i, h, addr, cert.not_after, &self.my_id, now);
        let new = outcome.new;
        if new {
            log::info!(
                "{}: new neighbour {} ({addr})",
                self.ifaces[i].name,
                h.node.short()
            );
            self.dirty = true;
            if let Some(f) = &self.fib {
                f.learn_neighbour(self.ifaces[i].index, addr, h.mac).await;
            }
        }
        // A neighbour that is new, restarted (its hello numbering jumped) or does not
        // list us may lack our database: answer at once so it learns we hear it, and
        // hand it our database. At most once per hello interval for a restart, once per
        // dead interval otherwise (a one-way link must not cost a full sync per hello).
        let knows_us = h.heard.iter().any(|x| x.node == self.my_id);
        let key = (i, h.node);
        let since = self.synced.get(&key).map(|t| now.saturating_sub(*t));
        let due = match since {
            None => true,
            Some(s) if outcome.restarted => s >= self.cfg.hello_interval_ms,
            Some(s) => s > self.cfg.dead_interval_ms,
        };
        if (new || outcome.restarted || !knows_us) && due {
            self.synced.insert(key, now);
            self.send_hello(i).await;
            let raws: Vec<Vec<u8>> = self.lsdb.entries().map(|e| e.raw.clone()).collect();
            for r in raws {
                if self.send(i, &r).await {
                    if let Ok(m) = self.metrics.lock() {
                        m.adverts_sent.inc();
                    }
                }
            }
        }
    }

    async fn on_events(&mut self, batch: Vec<Event>) {
        let mut adverts: Vec<Vec<u8>> = Vec::new();
        for ev in batch {
            match ev {
                Event::Control(q, reply) => {
                    let _ = reply.send(Ok(self.answer(q)));
                }
                Event::Packet { iface, src, data } => match wire::decode(&data) {
                    Ok(Message::Hello(h)) => self.on_hello(iface, src, h).await,
                    Ok(Message::Advert(_)) | Err(_) => adverts.push(data),
                },
            }
        }
        if adverts.is_empty() {
            return;
        }
        let now_s = unix_now();
        let refs: Vec<&[u8]> = adverts.iter().map(|a| a.as_slice()).collect();
        let results = self.lsdb.accept_batch(&refs, now_s);
        let mut reoriginate = false;
        for (raw, r) in adverts.iter().zip(results) {
            if let Ok(m) = self.metrics.lock() {
                m.adverts_received.inc();
                match r {
                    Ok(Accepted::Duplicate) => {
                        m.adverts_duplicate.inc();
                    }
                    Err(e) => {
                        m.adverts_rejected
                            .get_or_create(&ReasonLabels {
                                reason: e.name().into(),
                            })
                            .inc();
                    }
                    Ok(Accepted::New) => {}
                }
            }
            match r {
                Ok(Accepted::New) => {
                    if let Ok(Message::Advert(a)) = wire::decode(raw) {
                        if a.body.origin == self.my_id && a.body.seq >= self.seq {
                            // An advert of ours from before a state loss: jump past it.
                            self.seq = a.body.seq;
                            reoriginate = true;
                        }
                    }
                    self.flood(raw).await;
                    self.dirty = true;
                }
                Err(e) => log::debug!("advert rejected: {}", e.name()),
                Ok(Accepted::Duplicate) => {}
            }
        }
        if reoriginate {
            self.originate().await;
        }
        self.recompute().await;
    }

    async fn on_link(&mut self, ev: LinkEvent) {
        let Some(i) = self.ifaces.iter().position(|f| f.index == ev.ifindex) else {
            return;
        };
        if self.ifaces[i].up == ev.up {
            return;
        }
        self.ifaces[i].up = ev.up;
        if !ev.up {
            // Fast reroute first: routes with an alternate leave this interface now.
            match self
                .writer
                .mark_interface_down(self.datapath.tables(), ev.ifindex)
            {
                Ok(n) if n > 0 => {
                    log::info!("{}: {n} next hop(s) marked down", self.ifaces[i].name);
                    if self.hold.on_local_loss(self.now_ms()) {
                        self.hold_topo = self.prev_topo.clone();
                        log::info!(
                            "holding route changes for {} ms while the mesh converges",
                            self.cfg.local_convergence_delay_ms
                        );
                    }
                }
                Ok(_) => {}
                Err(e) => log::error!("{}: mark next hops down: {e}", self.ifaces[i].name),
            }
            let gone = self.nbrs.drop_interface(i);
            log::warn!(
                "{}: carrier lost; dropped {} neighbour(s)",
                self.ifaces[i].name,
                gone.len()
            );
            self.originate().await;
            self.recompute().await;
        } else {
            log::info!("{}: carrier back", self.ifaces[i].name);
            if let Ok(info) = dcmesh_loader::interface_info(&self.ifaces[i].name) {
                self.ifaces[i].mac = info.mac;
                self.ifaces[i].mtu = info.mtu;
            }
            self.send_hello(i).await;
        }
    }

    fn reload_cert(&mut self) {
        let mtime = std::fs::metadata(&self.cfg.certificate)
            .and_then(|m| m.modified())
            .ok();
        if mtime == self.own.mtime {
            return;
        }
        match read_cert(&self.cfg, &self.my_id) {
            Ok(c) => {
                log::info!(
                    "certificate {} reloaded (valid until {})",
                    self.cfg.certificate.display(),
                    c.cert.not_after
                );
                self.own = c;
                self.advertised.clear(); // re-originate with the new certificate
            }
            Err(e) => {
                log::error!(
                    "certificate {} changed but cannot be used: {e:#}",
                    self.cfg.certificate.display()
                );
                self.own.mtime = mtime;
            }
        }
    }

    fn check_own_cert(&mut self) -> bool {
        let now = unix_now();
        // Signatures are checked once per certificate (cache); the window every tick.
        self.own.error = self
            .own_certs
            .verify(&self.own.bytes, &self.cfg.authorities, now)
            .err()
            .map(|e| e.to_string());
        if let Ok(m) = self.metrics.lock() {
            m.own_cert_valid.set(i64::from(self.own.error.is_none()));
            m.own_cert_expiry
                .set(self.own.cert.not_after.min(i64::MAX as u64) as i64);
        }
        if let Some(e) = &self.own.error {
            if self
                .last_cert_shout
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
            {
                log::error!(
                    "OWN CERTIFICATE NOT VALID: {e}. This node is cut off from the mesh until {} is renewed (it is re-read automatically).",
                    self.cfg.certificate.display()
                );
                self.last_cert_shout = Some(Instant::now());
            }
            return false;
        }
        true
    }

    fn read_snr(&mut self) {
        let now = self.now_ms();
        for i in 0..self.ifaces.len() {
            match &self.ifaces[i].snr {
                SnrSource::None | SnrSource::Nl80211 { .. } => {}
                SnrSource::Static { db } => self.nbrs.set_snr(i, None, *db, now),
                SnrSource::File { path } => {
                    let Ok(text) = std::fs::read_to_string(path) else {
                        continue;
                    };
                    let (readings, bad) = crate::neighbour::parse_snr_file(&text);
                    if !bad.is_empty() {
                        log::warn!(
                            "{}: lines {bad:?} are not \"<MAC or *> <dB>\"",
                            path.display()
                        );
                    }
                    for r in readings {
                        self.nbrs.set_snr(i, r.mac, r.db, now);
                    }
                }
            }
        }
        if let Some(s) = &self.snr_nl80211 {
            s.feed(&mut self.nbrs, now);
        }
    }

    async fn on_tick(&mut self) {
        let now = self.now_ms();
        self.reload_cert();
        let cert_ok = self.check_own_cert();
        self.read_snr();
        self.expire_neighbours(now);
        for i in 0..self.ifaces.len() {
            self.send_hello(i).await;
        }
        if !self.lsdb.purge(unix_now()).is_empty() {
            self.dirty = true;
        }
        if cert_ok {
            let links = self.current_links();
            let refresh_due = self
                .last_origination
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(self.cfg.advert_refresh_s));
            if refresh_due || links_changed(&self.advertised, &links) {
                self.originate().await;
            }
        }
        self.recompute().await;
        self.update_metrics();
    }

    /// Drops neighbours silent for longer than the dead interval plus their stagger (or
    /// with an expired certificate); returns whether any was dropped.
    fn expire_neighbours(&mut self, now: u64) -> bool {
        let stagger = loss_stagger(&self.lsdb, &self.my_id, self.cfg.loss_stagger_ms);
        let gone = self.nbrs.expire(now, unix_now(), stagger);
        for (i, n) in &gone {
            log::warn!(
                "{}: neighbour {} lost (silent for {} ms)",
                self.ifaces[*i].name,
                n.short(),
                self.cfg.dead_interval_ms + stagger(n)
            );
        }
        for g in &gone {
            self.synced.remove(g);
        }
        !gone.is_empty()
    }

    /// When the next neighbour's dead interval (plus stagger) runs out; far away
    /// without neighbours.
    fn next_expiry(&self) -> tokio::time::Instant {
        let stagger = loss_stagger(&self.lsdb, &self.my_id, self.cfg.loss_stagger_ms);
        let at = self
            .nbrs
            .next_expiry_ms(stagger)
            .unwrap_or(self.now_ms() + 86_400_000);
        tokio::time::Instant::from_std(self.start) + Duration::from_millis(at)
    }

    /// A neighbour's dead interval ran out between ticks: drop it, advertise and
    /// reroute now (see "Ordered loss detection" in `neighbour`).
    async fn on_expiry(&mut self) {
        if self.expire_neighbours(self.now_ms()) && self.check_own_cert() {
            self.originate().await;
        }
        self.recompute().await;
    }

    /// The next hop a link to a neighbour makes.
    fn nh_key(&self, l: &Link) -> NhKey {
        NhKey {
            ifindex: self.ifaces[l.iface].index,
            mac: l.mac,
        }
    }

    /// The links to advertise. A neighbour still heard whose link has no cost this moment
    /// (it restarted and does not list us yet) keeps the cost we last advertised:
    /// dropping it would make the whole mesh route around a link that never stopped
    /// working, and back again a few hellos later.
    fn current_links(&self) -> BTreeMap<NodeId, u32> {
        let mut links: BTreeMap<NodeId, u32> = self
            .nbrs
            .best_links(self.now_ms(), &self.cfg.snr_policy)
            .into_iter()
            .filter_map(|(k, l)| l.cost.map(|c| (k, c)))
            .collect();
        for l in self.nbrs.links(self.now_ms(), &self.cfg.snr_policy) {
            if l.cost.is_none() && !links.contains_key(&l.node) {
                if let Some(&c) = self.advertised.get(&l.node) {
                    links.insert(l.node, c);
                }
            }
        }
        links
    }

    async fn originate(&mut self) {
        if self.own.error.is_some() {
            return;
        }
        if self.now_ms() < self.cfg.dead_interval_ms {
            // Start-up: until every live neighbour has been heard, an advert would list
            // too few links and briefly cut the mesh off from a datapath that still
            // forwards (our previous advert stays valid meanwhile).
            return;
        }
        let links = self.current_links();
        if self.now_ms() < 2 * self.cfg.dead_interval_ms {
            // A restart: our previous advert (synced back from the neighbours) stays in
            // force until every neighbour it listed has a link cost again, or two dead
            // intervals have passed. Advertising fewer links would make the neighbours
            // drop the missing ones (links count only when both ends list them) and route
            // around a datapath that still forwards.
            let missing = self.lsdb.get(&self.my_id).is_some_and(|e| {
                e.advert
                    .links
                    .iter()
                    .any(|l| !links.contains_key(&l.neighbour))
            });
            if missing {
                return;
            }
        }
        let seq = self.seq + 1;
        if let Err(e) = store_seq(&self.seq_path, seq) {
            log::error!(
                "cannot persist advert sequence number to {}: {e}; not originating",
                self.seq_path.display()
            );
            return;
        }
        self.seq = seq;
        let now = unix_now();
        let a = Advert {
            origin: self.my_id,
            seq,
            expires: (now + self.cfg.advert_lifetime_s).min(self.own.cert.not_after),
            cert: self.own.bytes.clone(),
            links: links
                .iter()
                .map(|(n, c)| AdvLink {
                    neighbour: *n,
                    cost: *c,
                })
                .collect(),
            prefixes: self.cfg.prefixes.clone(),
        };
        let raw = match a.encode(|m| self.me.sign(m)) {
            Ok(r) => r,
            Err(e) => return log::error!("encode advert: {e}"),
        };
        match self.lsdb.accept(&raw, now) {
            Ok(_) => {}
            Err(e) => log::error!(
                "own advert rejected by own database ({}); check certificate and prefixes",
                e.name()
            ),
        }
        // Bad news on a link we keep (its cost rose): like a loss, only routes over it
        // can change, and the mesh must learn before we move them (microloop avoidance).
        let best = self.nbrs.best_links(self.now_ms(), &self.cfg.snr_policy);
        let worse: Vec<(&Link, u32, u32)> = links
            .iter()
            .filter_map(|(n, c)| Some((best.get(n)?, *self.advertised.get(n)?, *c)))
            .filter(|(l, old, c)| c > old && self.writer.uses(&self.nh_key(l)))
            .collect();
        if !worse.is_empty() {
            let keys: Vec<NhKey> = worse.iter().map(|(l, ..)| self.nh_key(l)).collect();
            self.worse.extend(keys);
            if self.hold.on_local_loss(self.now_ms()) {
                self.hold_topo = self.prev_topo.clone();
                let what: Vec<String> = worse
                    .iter()
                    .map(|(l, old, c)| {
                        format!(
                            "{} {old}→{c} (df {:.2}, dr {:.2}, SNR {})",
                            l.node.short(),
                            l.df,
                            l.dr,
                            l.snr_db.map_or("-".into(), |d| format!("{d:.1} dB"))
                        )
                    })
                    .collect();
                log::info!(
                    "link cost rose ({}): holding route changes for {} ms while the mesh converges",
                    what.join(", "),
                    self.cfg.local_convergence_delay_ms
                );
            }
        }
        self.advertised = links;
        self.last_origination = Some(Instant::now());
        self.flood(&raw).await;
        self.dirty = true;
    }

    async fn recompute(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let t0 = Instant::now();
        let topo = Topology::build(self.lsdb.entries().map(|e| NodeInput {
            id: e.advert.origin,
            links: &e.advert.links,
            prefixes: &e.advert.prefixes,
        }));
        self.routes = spf::compute(&topo, &self.my_id);
        let prev_topo = self.prev_topo.replace(topo.clone());
        if let Ok(m) = self.metrics.lock() {
            m.spf_duration.observe(t0.elapsed().as_secs_f64());
        }
        if self.now_ms() < self.cfg.dead_interval_ms {
            // Start-up hold: let the pinned routes carry traffic until we know our
            // neighbours; recompute again on the next tick.
            self.dirty = true;
            return;
        }
        let best = self.nbrs.best_links(self.now_ms(), &self.cfg.snr_policy);
        // A neighbour still heard but whose link has no cost this moment (a restarted
        // neighbour not yet listing us, a burst of lost hellos) stays a next hop: its
        // link did not die, only our estimate is unsure, and without a next hop its
        // routes would vanish from the tables.
        let alive = self.nbrs.links(self.now_ms(), &self.cfg.snr_policy);
        let spec = |id: &NodeId| -> Option<(NextHopSpec, &Link)> {
            let l = best
                .get(id)
                .or_else(|| alive.iter().find(|l| l.node == *id))?;
            let f = &self.ifaces[l.iface];
            Some((
                NextHopSpec {
                    ifindex: f.index,
                    src_mac: f.mac,
                    dst_mac: l.mac,
                    mtu: f.mtu,
                },
                l,
            ))
        };
        let mut desired = BTreeMap::new();
        let mut kernel = BTreeMap::new();
        for r in &self.routes {
            match r.via {
                Via::Local => {
                    desired.insert(r.prefix, Target::Local);
                }
                Via::Neighbour { primary, alternate } => {
                    let Some((p, l)) = spec(&primary) else {
                        continue;
                    };
                    let alt = alternate.and_then(|a| spec(&a)).map(|x| x.0);
                    desired.insert(
                        r.prefix,
                        Target::Via {
                            primary: p,
                            alternate: alt,
                        },
                    );
                    kernel.insert(
                        r.prefix,
                        KernelNextHop {
                            ifindex: p.ifindex,
                            gateway: l.addr,
                        },
                    );
                }
            }
        }
        // Microloop avoidance: next hops of lost neighbours go down at once (alternates
        // take over); if that touched any route, our own changes wait for the mesh.
        // Neighbours still heard; next hops to any other go down.
        let live: BTreeSet<NhKey> = alive.iter().map(|l| self.nh_key(l)).collect();
        match self.writer.mark_down_unless(self.datapath.tables(), &live) {
            Ok(0) => {}
            Ok(n) => {
                log::info!("{n} next hop(s) to lost neighbours marked down");
                if self.hold.on_local_loss(self.now_ms()) {
                    self.hold_topo = prev_topo.clone();
                    log::info!(
                        "holding route changes for {} ms while the mesh converges",
                        self.cfg.local_convergence_delay_ms
                    );
                }
            }
            Err(e) => log::error!("mark next hops down: {e}"),
        }
        if self.hold.holding(self.now_ms()) {
            let down = self.writer.down_keys();
            let changed: BTreeSet<NhKey> = down.union(&self.worse).copied().collect();
            let held = if down.is_disjoint(&live) {
                let protects = self.protection(&topo);
                microloop::held_routes(
                    &self.writer.installed(),
                    &desired,
                    &changed,
                    &down,
                    |p, k| protects(p, k),
                )
            } else {
                None
            };
            if let Some(held) = held {
                // Look again next tick.
                self.dirty = true;
                // The kernel first: a prefix leaving the datapath would otherwise fall
                // through (XDP_PASS) to a kernel route not yet removed, and kernel routes of
                // neighbours can point at each other for that moment.
                if self.fib.is_some() {
                    let addrs: HashMap<NhKey, Ipv6Addr> = self
                        .nbrs
                        .links(self.now_ms(), &self.cfg.snr_policy)
                        .iter()
                        .map(|l| {
                            let k = self.nh_key(l);
                            (k, l.addr)
                        })
                        .collect();
                    let kernel = microloop::kernel_view(&held, &down, |k| addrs.get(k).copied());
                    if let Some(f) = self.fib.as_mut() {
                        f.sync(&kernel).await;
                    }
                }
                match self.writer.apply_held(self.datapath.tables(), &held) {
                    Ok(ch) if ch != crate::decision::Changes::default() => log::info!(
                        "during the hold: {} route(s) without a loop-free alternate repaired, {} removed",
                        ch.routes_set,
                        ch.routes_deleted
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        log::error!("{e}");
                        if let Ok(m) = self.metrics.lock() {
                            m.route_write_errors.inc();
                        }
                    }
                }
                return;
            }
            // A lost neighbour back, or a change the loss cannot explain.
            log::info!("another change during the hold: installing routes now");
            self.hold.cancel();
        }
        self.worse.clear();
        // The kernel first (see the hold above): routes leaving the datapath must not fall
        // through to stale kernel routes.
        if let Some(f) = self.fib.as_mut() {
            if f.sync(&kernel).await > 0 {
                self.dirty = true;
            }
        }
        let applied = self.writer.apply(self.datapath.tables(), &desired);
        if let Ok(ch) = &applied {
            if *ch != crate::decision::Changes::default() {
                log::info!(
                    "datapath: {} next hop(s) written, {} removed; {} route(s) written, {} removed",
                    ch.nexthops_set,
                    ch.nexthops_deleted,
                    ch.routes_set,
                    ch.routes_deleted
                );
            }
        }
        if let Err(e) = applied {
            log::error!("{e}");
            if let Ok(m) = self.metrics.lock() {
                m.route_write_errors.inc();
            }
            self.dirty = true;
        }
    }

    /// Whether a live neighbour (by next hop) still protects a prefix on `topo`, the
    /// topology as now known: RFC 5286 inequality 1 with today's distances, toward the
    /// prefix's origin as just computed (an unreachable prefix is protected by nobody).
    ///
    /// And the neighbour must not be holding that prefix itself: if, before the hold, it
    /// reached the prefix through a neighbour we lost (a node failure: every neighbour of
    /// the dead node holds), it may still forward on its own held alternate rather than
    /// on its new path, and held alternates of several neighbours can close a loop.
    fn protection(&self, topo: &Topology) -> impl Fn(&ipnet::IpNet, &NhKey) -> bool {
        let me = topo.index_of(&self.my_id);
        let from_me = me.map(|s| spf::dijkstra(topo, s).0).unwrap_or_default();
        let origin_id: HashMap<ipnet::IpNet, NodeId> =
            self.routes.iter().map(|r| (r.prefix, r.origin)).collect();
        let origin: HashMap<ipnet::IpNet, u32> = origin_id
            .iter()
            .filter_map(|(p, o)| Some((*p, topo.index_of(o)?)))
            .collect();
        let links = self.nbrs.links(self.now_ms(), &self.cfg.snr_policy);
        let live: BTreeSet<NodeId> = links.iter().map(|l| l.node).collect();
        let from_nbr: HashMap<NhKey, Vec<u64>> = links
            .iter()
            .filter_map(|l| {
                let k = self.nh_key(l);
                Some((k, spf::dijkstra(topo, topo.index_of(&l.node)?).0))
            })
            .collect();
        // Per live neighbour: the prefixes it reached through a neighbour we lost, on the
        // topology from before the hold.
        let mut holding: HashMap<NhKey, BTreeSet<ipnet::IpNet>> = HashMap::new();
        if let (Some(old), Some(s)) = (
            self.hold_topo.as_ref(),
            self.hold_topo
                .as_ref()
                .and_then(|t| t.index_of(&self.my_id)),
        ) {
            let lost: Vec<u32> = old
                .edges(s)
                .iter()
                .map(|&(v, _)| v)
                .filter(|&v| !live.contains(&old.id(v)))
                .collect();
            for l in &links {
                let Some(a) = old.index_of(&l.node) else {
                    continue;
                };
                if !old.edges(a).iter().any(|(v, _)| lost.contains(v)) {
                    continue;
                }
                let first = spf::dijkstra(old, a).1;
                let k = self.nh_key(l);
                let set = holding.entry(k).or_default();
                for (p, o) in &origin_id {
                    if let Some(d) = old.index_of(o) {
                        if lost.contains(&first[d as usize]) {
                            set.insert(*p);
                        }
                    }
                }
            }
        }
        move |p, k| {
            if holding.get(k).is_some_and(|h| h.contains(p)) {
                return false;
            }
            match (me, origin.get(p), from_nbr.get(k)) {
                (Some(s), Some(&d), Some(from_n)) => spf::still_loop_free(from_n, &from_me, s, d),
                _ => false,
            }
        }
    }

    fn update_metrics(&mut self) {
        let links = self.nbrs.links(self.now_ms(), &self.cfg.snr_policy);
        let counters = self.datapath.tables().counters().ok();
        let lanes = self.lanes.snapshot();
        let Ok(mut m) = self.metrics.lock() else {
            return;
        };
        for (iface, mode, c) in &lanes {
            m.set_lanes(iface, *mode, c.as_ref());
        }
        m.link_etx.clear();
        m.link_snr.clear();
        m.link_cost.clear();
        for l in &links {
            let lab = LinkLabels {
                iface: self.ifaces[l.iface].name.clone(),
                neighbour: l.node.to_string(),
            };
            if let Some(e) = l.etx {
                m.link_etx.get_or_create(&lab).set(e);
            }
            if let Some(s) = l.snr_db {
                m.link_snr.get_or_create(&lab).set(s);
            }
            if let Some(c) = l.cost {
                m.link_cost.get_or_create(&lab).set(i64::from(c));
            }
        }
        m.neighbours.set(self.nbrs.len() as i64);
        m.routes.set(self.routes.len() as i64);
        m.adverts.set(self.lsdb.len() as i64);
        if let Some(c) = counters {
            m.set_datapath(&c);
        }
    }

    fn answer(&mut self, q: Query) -> serde_json::Value {
        let now = self.now_ms();
        match q {
            Query::Status => {
                let c = self.lsdb.counts();
                let rejected: BTreeMap<&str, u64> = Reject::ALL
                    .iter()
                    .map(|r| (r.name(), c.rejected(*r)))
                    .collect();
                let hello_rej: BTreeMap<&str, u64> = Reject::ALL
                    .iter()
                    .map(|r| (r.name(), self.hello_rejects.get(r).copied().unwrap_or(0)))
                    .collect();
                let dp: BTreeMap<String, u64> = self
                    .datapath
                    .tables()
                    .counters()
                    .map(|c| {
                        c.named()
                            .map(|(k, v)| (k.name().to_string(), v.packets))
                            .collect()
                    })
                    .unwrap_or_default();
                json!({
                    "node": self.my_id,
                    "uptime_s": self.start.elapsed().as_secs(),
                    "seq": self.seq,
                    "cert": {
                        "not_before": self.own.cert.not_before,
                        "not_after": self.own.cert.not_after,
                        "valid": self.own.error.is_none(),
                        "error": self.own.error,
                    },
                    "interfaces": self.ifaces.iter().map(|f| json!({"name": f.name, "ifindex": f.index, "up": f.up})).collect::<Vec<_>>(),
                    "neighbours": self.nbrs.len(),
                    "routes": self.routes.len(),
                    "adverts": self.lsdb.len(),
                    "lsdb": { "accepted": c.accepted, "duplicates": c.duplicates, "purged": c.purged, "rejected": rejected },
                    "hellos_rejected": hello_rej,
                    "datapath": dp,
                    "lanes": self.lanes.status(),
                })
            }
            Query::Neighbors => {
                let links = self.nbrs.links(now, &self.cfg.snr_policy);
                serde_json::Value::Array(
                    links
                        .iter()
                        .map(|l| {
                            let mut v = serde_json::to_value(l).unwrap_or_default();
                            v["iface"] = json!(self.ifaces[l.iface].name);
                            v["mac"] = json!(dcmesh_loader::format_mac(&l.mac));
                            v
                        })
                        .collect(),
                )
            }
            Query::Routes => {
                let best = self.nbrs.best_links(now, &self.cfg.snr_policy);
                serde_json::Value::Array(
                    self.routes
                        .iter()
                        .map(|r| {
                            let mut v = serde_json::to_value(r).unwrap_or_default();
                            v["installed"] = json!(self.writer.routes().contains_key(&r.prefix));
                            if let Via::Neighbour { primary, .. } = r.via {
                                if let Some(l) = best.get(&primary) {
                                    v["iface"] = json!(self.ifaces[l.iface].name);
                                    v["mac"] = json!(dcmesh_loader::format_mac(&l.mac));
                                }
                            }
                            v
                        })
                        .collect(),
                )
            }
            Query::Adverts => {
                let mut v: Vec<_> = self.lsdb.entries().collect();
                v.sort_by_key(|e| e.advert.origin);
                serde_json::Value::Array(
                    v.iter()
                        .map(|e| {
                            json!({
                                "origin": e.advert.origin,
                                "seq": e.advert.seq,
                                "expires": e.advert.expires,
                                "cert_not_after": e.cert.not_after,
                                "links": e.advert.links.iter().map(|l| json!({"neighbour": l.neighbour, "cost": l.cost})).collect::<Vec<_>>(),
                                "prefixes": e.advert.prefixes,
                            })
                        })
                        .collect(),
                )
            }
        }
    }
}

/// Per lost neighbour X, the extra silence before we declare it dead: our rank among
/// X's advertised neighbours × `step_ms` (see "Ordered loss detection" in `neighbour`).
fn loss_stagger<'a>(
    lsdb: &'a Lsdb,
    me: &'a NodeId,
    step_ms: u64,
) -> impl Fn(&NodeId) -> u64 + Copy + 'a {
    move |x| {
        lsdb.get(x).map_or(0, |e| {
            crate::neighbour::loss_stagger_ms(
                e.advert.links.iter().map(|l| l.neighbour),
                me,
                step_ms,
            )
        })
    }
}

/// Whether our links moved enough to tell the mesh: a neighbour came or went, or a cost
/// changed by more than 1/8 (smaller wobbles wait for the periodic refresh).
pub fn links_changed(old: &BTreeMap<NodeId, u32>, new: &BTreeMap<NodeId, u32>) -> bool {
    if old.len() != new.len() || old.keys().ne(new.keys()) {
        return true;
    }
    old.values().zip(new.values()).any(|(a, b)| {
        let (a, b) = (u64::from(*a), u64::from(*b));
        a.abs_diff(b) * 8 > a
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_change_threshold() {
        let a = BTreeMap::from([(NodeId([1; 32]), 256u32)]);
        let mut b = a.clone();
        assert!(!links_changed(&a, &b));
        b.insert(NodeId([1; 32]), 288);
        assert!(!links_changed(&a, &b), "exactly 1/8 is a wobble");
        b.insert(NodeId([1; 32]), 289);
        assert!(links_changed(&a, &b));
        b.insert(NodeId([2; 32]), 256);
        assert!(links_changed(&a, &b));
        assert!(links_changed(&a, &BTreeMap::new()));
    }

    #[test]
    fn seq_file_round_trip() {
        let p = std::env::temp_dir().join(format!("dcmesh-seq-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        assert_eq!(load_seq(&p).unwrap(), 0);
        store_seq(&p, 41).unwrap();
        assert_eq!(load_seq(&p).unwrap(), 41);
        std::fs::write(&p, "garbage").unwrap();
        assert!(load_seq(&p).is_err());
        std::fs::remove_file(&p).unwrap();
    }
}
