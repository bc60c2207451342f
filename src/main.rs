//! The `segnode` binary: command-line parsing, logging set-up, and dispatch to the library. Errors from
//! the library are typed; here, at the edge, they become `anyhow` messages and an exit status.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

use segnode::config::Settings;
use segnode_db::Index;

#[derive(Parser)]
#[command(
    name = "segnode",
    version,
    about = "DICOM node: receive CT/CBCT series, segment, send DICOM SEG back"
)]
struct Cli {
    /// Configuration file, layered on the built-in defaults (the documented config/segnode.toml);
    /// default: config/segnode.toml in the working directory when present.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node: DICOM listener, store, index, series completion.
    Serve,
    /// Inspect the series in the index.
    #[command(subcommand)]
    Series(SeriesCommand),
    /// Database reachable? Counts of series, jobs and deliveries per state (exit 1 when the database
    /// cannot be opened: a health check).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Run only the pipelines (another machine or process, same database and storage).
    Worker,
    /// Make the running node read its configuration again (rules, destinations, callers, results), as
    /// SIGHUP does: asks its console (http.port) with the admin token. A bad file is refused with the
    /// key named and the running configuration stays.
    Reload,
    /// Inspect and manage the job queue.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Inspect and manage result deliveries.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Check the routing rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// C-ECHO a remote AE: `segnode echo AET@host:port`, or a configured destination (TLS included):
    /// `segnode echo --destination NAME` — the "test connection" of a destination.
    Echo {
        #[arg(required_unless_present = "destination")]
        peer: Option<String>,
        /// A `[[destinations]]` entry of the configuration, instead of AET@host:port.
        #[arg(long, conflicts_with = "peer")]
        destination: Option<String>,
        /// Our calling AE title (default: the destination's calling_ae, else dicom.ae_title).
        #[arg(long)]
        aet: Option<String>,
    },
    /// C-STORE a file or every file of a folder: `segnode send DIR AET@host:port`, or
    /// `segnode send --destination NAME DIR`.
    Send {
        input: PathBuf,
        #[arg(required_unless_present = "destination")]
        peer: Option<String>,
        #[arg(long, conflicts_with = "peer")]
        destination: Option<String>,
        #[arg(long)]
        aet: Option<String>,
    },
    /// Segment a series folder and write a DICOM SEG; prints one JSON line.
    Segment(segnode::pipeline::cli::SegmentArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check a site's ONNX model against its manifest.
    #[command(subcommand)]
    Models(ModelsCommand),
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Read the manifest and its model file: tensors, opset, operators (and which tract lacks), and
    /// whether they fit; exit 1 when they do not.
    Check {
        manifest: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// The effective configuration, key by key, with where each value came from (default, file,
    /// environment variable); exit 1 when it does not validate.
    Show {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SeriesCommand {
    /// List every series (newest first).
    List(ListArgs),
    /// Show one series and its history.
    Show {
        /// Series Instance UID.
        uid: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a finished series' files now (its history stays; state PURGED). Refused while the series
    /// is receiving, has a job that may still run or a delivery pending.
    Purge {
        /// Series Instance UID.
        uid: String,
    },
    /// Callers learnt to split a series over several associations (their series wait
    /// `completion.settle_s` after the release), with the series that taught each.
    Splitters {
        #[arg(long)]
        json: bool,
    },
    /// Forget a learnt splitting caller: its series complete at release again.
    ForgetSplitter {
        /// Calling AE title.
        calling_ae: String,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Jobs, newest first.
    List {
        #[arg(long)]
        json: bool,
        /// Only the jobs of this series.
        #[arg(long)]
        series: Option<String>,
    },
    /// One job with its result or error.
    Show { id: String },
    /// Queue a FAILED or DEAD job again now.
    Retry { id: String },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Deliveries, newest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Send a DEAD (or already SENT) delivery again.
    Resend { id: String },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Show which rules the series in a file or folder would hit.
    Test { path: PathBuf },
}

#[derive(Args)]
struct ListArgs {
    /// One JSON document (an array of series) instead of a table.
    #[arg(long)]
    json: bool,
}

fn init_logging(settings: &Settings) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log.level));
    // colour codes only on a terminal: a log file or journald gets plain text
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if settings.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `segnode reload`: POST /api/reload to the local console with the admin token; prints its answer.
fn reload_command(settings: &Settings) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let h = &settings.http;
    anyhow::ensure!(
        h.port != 0,
        "the console is off (http.port = 0): send SIGHUP to the node instead"
    );
    let token = std::fs::read_to_string(&h.admin_token_file)
        .with_context(|| format!("reading the admin token {}", h.admin_token_file.display()))?;
    let host = if h.bind == "0.0.0.0" || h.bind == "::" {
        "127.0.0.1"
    } else {
        h.bind.as_str()
    };
    let mut s = std::net::TcpStream::connect((host, h.port))
        .with_context(|| format!("connecting to the console on {host}:{}", h.port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    write!(
        s,
        "POST /api/reload HTTP/1.1\r\nHost: {host}:{}\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        h.port,
        token.trim()
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or((answer.as_str(), ""));
    let ok_status = head.starts_with("HTTP/1.1 200");
    let body = body.trim();
    println!("{body}");
    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    anyhow::ensure!(
        ok_status && value["ok"] == true,
        "reload refused: {}",
        head.lines().next().unwrap_or("")
    );
    Ok(())
}

/// Offline commands print one JSON line, also on failure, so scripts can parse every outcome.
fn offline(result: anyhow::Result<serde_json::Value>) -> anyhow::Result<()> {
    match result {
        Ok(v) => {
            println!("{v}");
            Ok(())
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({ "status": "error", "error": format!("{e:#}") })
            );
            Err(e)
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Segment(_) = &cli.command {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("SEGNODE_LOG")
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init();
    }
    match &cli.command {
        Command::Segment(a) => return offline(segnode::pipeline::cli::run(a)),
        Command::Config(ConfigCommand::Show { json }) => {
            return config_show(cli.config.as_deref(), *json)
        }
        Command::Models(ModelsCommand::Check { manifest, json }) => {
            let (report, ok) = segnode::pipeline::models_cli::check(manifest);
            if *json {
                println!("{report}");
            } else {
                print!("{}", segnode::pipeline::models_cli::text(&report));
            }
            if !ok {
                std::process::exit(1);
            }
            return Ok(());
        }
        _ => {}
    }
    let settings = Settings::load(cli.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Serve => {
            init_logging(&settings);
            runtime.block_on(segnode::node::serve(settings, cli.config.clone()))?;
        }
        Command::Series(cmd) => runtime.block_on(series_command(settings, cmd))?,
        Command::Status { json } => runtime.block_on(status_command(settings, json))?,
        Command::Worker => {
            init_logging(&settings);
            runtime.block_on(segnode::node::work(settings))?;
        }
        Command::Reload => reload_command(&settings)?,
        Command::Jobs(cmd) => runtime.block_on(jobs_command(settings, cmd))?,
        Command::Outbox(cmd) => runtime.block_on(outbox_command(settings, cmd))?,
        Command::Rules(RulesCommand::Test { path }) => rules_test(&settings, &path)?,
        Command::Echo {
            peer,
            destination,
            aet,
        } => {
            let (peer, opts) = scu_target(&settings, peer, destination, aet)?;
            runtime.block_on(echo_command(&peer, &opts))?
        }
        Command::Send {
            input,
            peer,
            destination,
            aet,
        } => {
            let (peer, opts) = scu_target(&settings, peer, destination, aet)?;
            runtime.block_on(send_command(&input, &peer, &opts))?
        }
        Command::Segment(_) | Command::Config(_) | Command::Models(_) => {}
    }
    // the command is done (its answer printed, its index closed): leftover blocking work (a database
    // worker thread still finishing) must not hold the process open
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_WAIT);
    Ok(())
}

/// How long a finished command waits for the async runtime's remaining blocking tasks.
const RUNTIME_SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `segnode config show`: the merged layers with each key's origin, printed even when they do not
/// validate (then the error follows and the exit status is 1), so an administrator can see why.
fn config_show(file: Option<&std::path::Path>, json: bool) -> anyhow::Result<()> {
    let layers = segnode::config::Layers::discover(file)?;
    let effective = layers.effective()?;
    let check = layers.settings();
    if json {
        let mut v = effective.to_json();
        v["valid"] = check.is_ok().into();
        if let Err(e) = &check {
            v["error"] = e.to_string().into();
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{effective}");
    }
    check
        .map(|_| ())
        .context("the effective configuration does not validate")
}

fn fmt_ms(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) => {
            let (da, tm) = segnode_imaging::result::uid::da_tm_from_unix((ms.max(0) / 1000) as u64);
            format!(
                "{}-{}-{}T{}:{}:{}Z",
                &da[0..4],
                &da[4..6],
                &da[6..8],
                &tm[0..2],
                &tm[2..4],
                &tm[4..6]
            )
        }
    }
}

async fn status_command(settings: Settings, json: bool) -> anyhow::Result<()> {
    let index = open_index(&settings).await?;
    let counts = index.state_counts().await?;
    let backend = format!("{:?}", index.backend());
    index.close().await;
    if json {
        let v = serde_json::json!({
            "node": settings.node_name(),
            "database": backend,
            "series": counts.get("series"),
            "jobs": counts.get("jobs"),
            "outbox": counts.get("outbox"),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "node {} — database {backend}: reachable",
            settings.node_name()
        );
        for (table, states) in &counts {
            let parts: Vec<String> = states.iter().map(|(s, n)| format!("{s} {n}")).collect();
            println!(
                "{table:<7} {}",
                if parts.is_empty() {
                    "-".to_string()
                } else {
                    parts.join(", ")
                }
            );
        }
    }
    Ok(())
}

async fn series_command(settings: Settings, cmd: SeriesCommand) -> anyhow::Result<()> {
    let index = open_index(&settings).await?;
    match cmd {
        SeriesCommand::List(args) => {
            let rows = index.list_series().await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<64}  {:<4} {:>6}  {:<9} {:>3}  {:<20}  {:<20}  REASON",
                    "SERIES UID", "MOD", "INST", "STATE", "REV", "FIRST RECEIVED", "COMPLETED"
                );
                for r in rows {
                    println!(
                        "{:<64}  {:<4} {:>6}  {:<9} {:>3}  {:<20}  {:<20}  {}",
                        r.series_uid,
                        r.modality.as_deref().unwrap_or("-"),
                        r.instance_count,
                        r.state,
                        r.revision,
                        fmt_ms(Some(r.first_received_ms)),
                        fmt_ms(r.completed_ms),
                        r.completion_reason.as_deref().unwrap_or("")
                    );
                }
            }
        }
        SeriesCommand::Splitters { json } => {
            let rows = index.splitting_callers_learnt().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<16}  {:<20}  TAUGHT BY SERIES", "CALLING AE", "LEARNT");
                for r in rows {
                    println!(
                        "{:<16}  {:<20}  {}",
                        r.calling_ae,
                        fmt_ms(Some(r.learnt_ms)),
                        r.series_uid
                    );
                }
            }
        }
        SeriesCommand::ForgetSplitter { calling_ae } => {
            if index.forget_splitting_caller(&calling_ae).await? {
                println!("{calling_ae}: forgotten; its series complete at release again");
            } else {
                anyhow::bail!("{calling_ae} is not a learnt splitting caller");
            }
        }
        SeriesCommand::Purge { uid } => {
            let series = index
                .list_series()
                .await?
                .into_iter()
                .find(|s| s.series_uid == uid);
            let Some(series) = series else {
                anyhow::bail!("no series {uid} in the index");
            };
            let target = segnode_db::retention::PurgeTarget {
                series_uid: uid.clone(),
                revision: series.revision,
            };
            let store = settings.storage.dir.clone();
            match segnode::retention::purge_series(&index, &store, &target, "purged by hand (segnode series purge)").await? {
                Some(p) => println!(
                    "series {uid} purged: {} files, {:.1} MB removed; history kept",
                    p.files,
                    p.bytes as f64 / 1_048_576.0
                ),
                None => anyhow::bail!(
                    "series {uid} is {} and cannot be purged now: only a complete, routed series with no job that may still run and no delivery pending",
                    series.state
                ),
            }
        }
        SeriesCommand::Show { uid, json } => {
            let series = index
                .list_series()
                .await?
                .into_iter()
                .find(|s| s.series_uid == uid);
            let Some(series) = series else {
                anyhow::bail!("no series {uid} in the index");
            };
            let events = index.series_events(&uid).await?;
            if json {
                let instances = index.series_instances(&uid).await?;
                println!(
                    "{}",
                    serde_json::json!({ "series": series, "history": events, "instances": instances })
                );
            } else {
                println!("series {} (study {})", series.series_uid, series.study_uid);
                println!(
                    "  {} instances, state {} (revision {}), modality {}",
                    series.instance_count,
                    series.state,
                    series.revision,
                    series.modality.as_deref().unwrap_or("-")
                );
                for e in events {
                    println!(
                        "  {}  rev {}  {:<9} {}",
                        fmt_ms(Some(e.at_ms)),
                        e.revision,
                        e.event,
                        e.detail.unwrap_or_default()
                    );
                }
            }
        }
    }
    index.close().await;
    Ok(())
}

/// The index with this configuration's pool settings (`database.acquire_timeout_s` bounds a health
/// check against a database that is down).
async fn open_index(settings: &Settings) -> anyhow::Result<Index> {
    Index::open_with(&settings.database.db_options())
        .await
        .with_context(|| format!("opening the index {}", settings.database.url))
}

async fn jobs_command(settings: Settings, cmd: JobsCommand) -> anyhow::Result<()> {
    let index = open_index(&settings).await?;
    let queue = segnode_db::jobs::Queue::new(index.clone());
    match cmd {
        JobsCommand::List { json, series } => {
            let jobs = queue.list(series.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                println!(
                    "{:<24}  {:<16} {:<8} {:>3}  {:<20}  {:<64}  ERROR",
                    "JOB", "PIPELINE", "STATE", "TRY", "CREATED", "SERIES"
                );
                for j in jobs {
                    println!(
                        "{:<24}  {:<16} {:<8} {:>3}  {:<20}  {:<64}  {}",
                        j.id,
                        j.pipeline,
                        j.state,
                        j.attempts,
                        fmt_ms(Some(j.created_ms)),
                        j.series_uid,
                        j.error.as_deref().unwrap_or("")
                    );
                }
            }
        }
        JobsCommand::Show { id } => {
            let job = queue
                .get(&id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no job {id}"))?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        JobsCommand::Retry { id } => {
            anyhow::ensure!(
                queue.retry(&id).await?,
                "job {id} is not FAILED or DEAD (or does not exist)"
            );
            admin_audit(&settings, "jobs retry", &id);
            println!("job {id} queued again");
        }
    }
    index.close().await;
    Ok(())
}

async fn outbox_command(settings: Settings, cmd: OutboxCommand) -> anyhow::Result<()> {
    let index = open_index(&settings).await?;
    let outbox = segnode_db::outbox::Outbox::new(index.clone());
    match cmd {
        OutboxCommand::List { json } => {
            let items = outbox.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                println!(
                    "{:<24}  {:<12} {:<8} {:>3} {:<6}  {:<20}  ERROR",
                    "ID", "DESTINATION", "STATE", "TRY", "STATUS", "SENT"
                );
                for d in items {
                    println!(
                        "{:<24}  {:<12} {:<8} {:>3} {:<6}  {:<20}  {}",
                        d.id,
                        d.destination,
                        d.state,
                        d.attempts,
                        d.last_status.as_deref().unwrap_or("-"),
                        fmt_ms(d.sent_ms),
                        d.error.as_deref().unwrap_or("")
                    );
                }
            }
        }
        OutboxCommand::Resend { id } => {
            anyhow::ensure!(
                outbox
                    .resend(&id)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                "delivery {id} is not DEAD or SENT (or does not exist)"
            );
            admin_audit(&settings, "outbox resend", &id);
            println!(
                "delivery {id} queued again (a running node picks it up within its poll interval)"
            );
        }
    }
    index.close().await;
    Ok(())
}

/// `segnode rules test`: group the files by series and show the rules each series hits.
fn rules_test(settings: &Settings, path: &std::path::Path) -> anyhow::Result<()> {
    use segnode::routing::SeriesFacts;
    use segnode::store::header::read_header;
    let router = settings.router()?;
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v = Vec::new();
        let mut stack = vec![path.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d)?.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p)
                } else {
                    v.push(p)
                }
            }
        }
        v
    } else {
        vec![path.to_path_buf()]
    };
    // facts, lowest InstanceNumber seen, instance count (facts.slices counts frames)
    let mut series: std::collections::BTreeMap<String, (SeriesFacts, Option<i64>, usize)> =
        Default::default();
    for f in files {
        let Ok(h) = read_header(&f) else { continue };
        let entry = series.entry(h.series_uid.clone()).or_insert_with(|| {
            (
                SeriesFacts {
                    modality: h.modality.clone(),
                    body_part: h.body_part.clone(),
                    series_description: h.series_description.clone(),
                    protocol_name: h.protocol_name.clone(),
                    slice_thickness: h.slice_thickness,
                    orientation: h.iop,
                    ..Default::default()
                },
                h.instance_number,
                0,
            )
        });
        entry.0.slices += h.number_of_frames.unwrap_or(1).max(1);
        entry.2 += 1;
        if h.instance_number < entry.1 && h.instance_number.is_some() {
            entry.0.slice_thickness = h.slice_thickness;
            entry.0.orientation = h.iop;
            entry.1 = h.instance_number;
        }
    }
    anyhow::ensure!(!series.is_empty(), "no DICOM file under {}", path.display());
    for (uid, (facts, _, instances)) in &series {
        let frames = if facts.slices as usize != *instances {
            format!(" ({} frames)", facts.slices)
        } else {
            String::new()
        };
        println!(
            "series {uid}: {instances} instances{frames}, modality {}, body part {}, description {:?}",
            facts.modality.as_deref().unwrap_or("-"),
            facts.body_part.as_deref().unwrap_or("-"),
            facts.series_description.as_deref().unwrap_or("")
        );
        let hits = router.matching(facts);
        if hits.is_empty() {
            println!("  no rule matches: it would be stored and reported, not processed");
        }
        for r in hits {
            println!(
                "  rule {} → pipelines {} → destinations {}",
                r.name,
                r.pipelines.join(", "),
                if r.destinations.is_empty() {
                    "(none)".to_string()
                } else {
                    r.destinations.join(", ")
                }
            );
        }
    }
    println!("(calling / called AE conditions are not evaluated here: files carry no association)");
    Ok(())
}

/// An administrator's state-changing CLI action, in the audit trail.
fn admin_audit(settings: &Settings, action: &str, id: &str) {
    if let Err(e) = segnode::audit::open(
        &settings.audit.path,
        &settings.audit.syslog,
        &settings.node_name(),
        &settings.dicom.ae_title,
    ) {
        eprintln!("warning: {e}");
    }
    segnode::audit::record(
        "admin",
        serde_json::json!({
            "action": action,
            "id": id,
            "user": std::env::var("USER").unwrap_or_default(),
        }),
    );
}

fn scu_options(settings: &Settings) -> segnode_net::scu::ScuOptions {
    segnode_net::scu::ScuOptions {
        connect_timeout: segnode::config::secs(settings.dispatch.connect_timeout_s),
        dimse_timeout: segnode::config::secs(settings.dispatch.dimse_timeout_s),
        max_pdu: settings.dicom.max_pdu,
        tls: None,
    }
}

/// The peer and SCU options of `segnode echo` / `send`: `AET@host:port` (plain TCP), or a configured
/// destination with its calling AE title and TLS settings.
fn scu_target(
    settings: &Settings,
    peer: Option<String>,
    destination: Option<String>,
    aet: Option<String>,
) -> anyhow::Result<(segnode_net::scu::Peer, segnode_net::scu::ScuOptions)> {
    use segnode_net::scu::Peer;
    let mut opts = scu_options(settings);
    if let Some(name) = destination {
        let dest = settings
            .destinations
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| anyhow::anyhow!("no destination `{name}` in the configuration"))?;
        opts.tls = dest.scu_tls().map_err(|e| anyhow::anyhow!("{e}"))?;
        let calling = aet
            .or_else(|| dest.calling_ae.clone())
            .unwrap_or_else(|| settings.dicom.ae_title.clone());
        let peer = Peer {
            ae_title: dest.ae_title.clone(),
            host: dest.host.clone(),
            port: dest.port,
            calling_ae: calling,
        };
        return Ok((peer, opts));
    }
    let peer = peer.ok_or_else(|| anyhow::anyhow!("give AET@host:port or --destination NAME"))?;
    let peer = Peer::parse(&peer, aet.as_deref().unwrap_or(&settings.dicom.ae_title))?;
    Ok((peer, opts))
}

async fn echo_command(
    peer: &segnode_net::scu::Peer,
    opts: &segnode_net::scu::ScuOptions,
) -> anyhow::Result<()> {
    let t = std::time::Instant::now();
    let status = segnode_net::scu::echo(peer, opts).await?;
    println!(
        "C-ECHO {}@{}:{}{} status {status:04X} in {} ms",
        peer.ae_title,
        peer.host,
        peer.port,
        if opts.tls.is_some() { " (TLS)" } else { "" },
        t.elapsed().as_millis()
    );
    anyhow::ensure!(status == 0, "echo failed with status {status:04X}");
    Ok(())
}

async fn send_command(
    input: &std::path::Path,
    peer: &segnode_net::scu::Peer,
    opts: &segnode_net::scu::ScuOptions,
) -> anyhow::Result<()> {
    use segnode_net::scu::{store, Outgoing};
    let mut files = Vec::new();
    if input.is_dir() {
        for e in std::fs::read_dir(input)?.flatten() {
            if e.path().is_file() {
                files.push(e.path());
            }
        }
        files.sort();
    } else {
        files.push(input.to_path_buf());
    }
    let mut items = Vec::new();
    for f in &files {
        match Outgoing::from_file(f) {
            Ok(o) => items.push(o),
            Err(e) => eprintln!("skipped: {e}"),
        }
    }
    anyhow::ensure!(!items.is_empty(), "nothing to send in {}", input.display());
    let t = std::time::Instant::now();
    let results = store(peer, opts, &items).await?;
    let mut failed = 0;
    for (it, r) in items.iter().zip(&results) {
        match r {
            Ok(st) if !segnode_net::dimse::is_failure(*st) => {}
            Ok(st) => {
                failed += 1;
                eprintln!("{}: status {st:04X}", it.path.display());
            }
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e}", it.path.display());
            }
        }
    }
    println!(
        "sent {} of {} files to {} in {} ms",
        items.len() - failed,
        items.len(),
        peer.ae_title,
        t.elapsed().as_millis()
    );
    anyhow::ensure!(failed == 0, "{failed} file(s) not stored");
    Ok(())
}
