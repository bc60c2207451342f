//! The index, job queue, routing and outbox against a real database: SQLite by default, PostgreSQL (a
//! real server started by the harness) with `SEGNODE_TEST_DB=postgres`. Several `Index` handles with
//! their own connection pools stand for several segnode processes sharing one database.

mod support;

use segnode::dispatch::purge_delivered;
use segnode::routing::route_completed;
use segnode::store::header::InstanceHeader;
use segnode::store::ingest::InstanceRecord;
use segnode_db::associations::AssociationRecord;
use segnode_db::instances::RecordOutcome;
use segnode_db::jobs::Queue;
use segnode_db::outbox::{NewDelivery, Outbox};
use segnode_db::JobState::{Dead as DEAD, Done as DONE, Running as RUNNING};
use segnode_db::{AssociationState, Index, Topic};
use std::collections::HashMap;
use std::time::Duration;
use support::postgres::{database_url, postgres_selected};

/// A fresh database (and the folder a SQLite file lives in).
fn fresh() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path());
    (dir, url)
}

fn record(series: &str, sop: &str, z: f64, assoc: &str) -> InstanceRecord {
    InstanceRecord {
        header: InstanceHeader {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: sop.into(),
            study_uid: "1.2".into(),
            series_uid: series.into(),
            modality: Some("CT".into()),
            body_part: Some("CHEST".into()),
            ipp: Some([0.0, 0.0, z]),
            iop: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            rows: Some(4),
            columns: Some(4),
            pixel_spacing: Some([0.5, 0.5]),
            ..Default::default()
        },
        transfer_syntax: "1.2.840.10008.1.2.1".into(),
        association_id: assoc.into(),
        calling_ae: "STORESCU".into(),
        called_ae: "SEGNODE".into(),
        peer: "127.0.0.1:1".into(),
        path: format!("1.2/{series}/{sop}.dcm"),
        size_bytes: 10,
        content_hash: format!("h{sop}"),
    }
}

fn assoc(id: &str, node: &str) -> AssociationRecord {
    AssociationRecord {
        id: id.into(),
        node: node.into(),
        calling_ae: "STORESCU".into(),
        called_ae: "SEGNODE".into(),
        peer: "127.0.0.1:1".into(),
    }
}

/// A SEG result `<i>.dcm` for the destination `pacs`.
fn delivery(i: usize) -> NewDelivery {
    NewDelivery {
        destination: "pacs".into(),
        path: format!("{i}.dcm"),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.66.4".into(),
        sop_instance_uid: format!("2.25.{i}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn series_lifecycle_revisions_and_orphaned_associations() {
    let (_dir, url) = fresh();
    let index = Index::open(&url).await.unwrap();
    index.begin_association(&assoc("a1", "rx-1")).await.unwrap();
    index.begin_association(&assoc("a2", "rx-2")).await.unwrap();
    let o = index
        .record_instance(&record("1.2.3", "1.2.3.1", 0.0, "a1"))
        .await
        .unwrap();
    assert!(o.new_series);
    let o = index
        .record_instance(&record("1.2.3", "1.2.3.2", 1.0, "a2"))
        .await
        .unwrap();
    assert!(!o.new_series);
    let open = index.receiving_series().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].instance_count, 2);
    // a stale view (another instance arrived since) cannot complete the series
    let mut stale = open[0].clone();
    stale.instance_count -= 1;
    assert!(!index.complete_series(&stale, "stale", false).await.unwrap());
    let mut completed = index.wakeups().subscribe(Topic::Series);
    completed.arm();
    assert!(index
        .complete_series(&open[0], "test", false)
        .await
        .unwrap());
    assert!(
        completed.wait(Duration::from_secs(30)).await,
        "completion rings the routers"
    );
    assert!(
        !index
            .complete_series(&open[0], "again", false)
            .await
            .unwrap(),
        "completes once"
    );
    // late instance: revision 2
    let o = index
        .record_instance(&record("1.2.3", "1.2.3.3", 2.0, "a1"))
        .await
        .unwrap();
    assert_eq!(
        o,
        RecordOutcome {
            revision: 2,
            new_series: false,
            reopened: true
        }
    );
    let events: Vec<String> = index
        .series_events("1.2.3")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, vec!["received", "complete", "revision"]);
    // a restarted receiver closes its own open associations, not another receiver's
    let again = Index::open(&url).await.unwrap();
    assert_eq!(again.list_series().await.unwrap()[0].instance_count, 3);
    assert_eq!(again.close_orphaned_associations("rx-1").await.unwrap(), 1);
    assert_eq!(again.close_orphaned_associations("rx-1").await.unwrap(), 0);
    let states: Vec<AssociationState> = again
        .series_carriers("1.2.3", 1)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.state)
        .collect();
    assert!(
        states.contains(&AssociationState::Open),
        "rx-2's association stays open: {states:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_starting_together_migrate_once() {
    let (_dir, url) = fresh();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Index::open(&url).await })
        })
        .collect();
    let mut handles = Vec::new();
    for o in opens {
        handles.push(o.await.unwrap().expect("open"));
    }
    let mut applied = handles[0].schema_versions().await.unwrap();
    let versions = applied.len();
    applied.dedup();
    let distinct = applied.len();
    assert_eq!(versions, distinct, "each migration applied once");
    assert!(versions >= 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_receivers_filing_one_new_series_at_once() {
    let (_dir, url) = fresh();
    let a = Index::open(&url).await.unwrap();
    let b = Index::open(&url).await.unwrap();
    a.begin_association(&assoc("ra", "rx-a")).await.unwrap();
    b.begin_association(&assoc("rb", "rx-b")).await.unwrap();
    let mut tasks = Vec::new();
    for (k, (index, aid)) in [(a.clone(), "ra"), (b.clone(), "rb")]
        .into_iter()
        .enumerate()
    {
        for t in 0..3 {
            let index = index.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    let n = k * 100 + t * 10 + i;
                    index
                        .record_instance(&record("9.9", &format!("9.9.{n}"), n as f64, aid))
                        .await
                        .expect("filed");
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let series = a.list_series().await.unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].instance_count, 60);
    assert_eq!(series[0].revision, 1);
    let received = a
        .series_events("9.9")
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "received")
        .count();
    assert_eq!(received, 1, "one receiver created the series");
    // the tracker of either receiver sees both associations
    let mut carriers: Vec<(String, AssociationState)> = b
        .series_carriers("9.9", 1)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect();
    carriers.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        carriers,
        vec![
            ("ra".to_string(), AssociationState::Open),
            ("rb".to_string(), AssociationState::Open)
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_expiry_retry_and_dead_letter() {
    let (_dir, url) = fresh();
    let q = Queue::new(Index::open(&url).await.unwrap());
    let pipes = vec!["lung".to_string()];
    assert!(q
        .create("1.2.3", 1, "lung", &["r".into()], &["pacs".into()])
        .await
        .unwrap());
    assert!(
        !q.create("1.2.3", 1, "lung", &["r".into()], &["pacs".into()])
            .await
            .unwrap(),
        "one job per revision"
    );
    assert!(q
        .claim(&["cochlear".into()], "w0", 1000)
        .await
        .unwrap()
        .is_none());
    let job = q.claim(&pipes, "w1", 50).await.unwrap().expect("claimed");
    assert_eq!((job.state, job.attempts), (RUNNING, 1));
    assert!(q.claim(&pipes, "w2", 50).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(120)).await;
    let again = q
        .claim(&pipes, "w2", 10_000)
        .await
        .unwrap()
        .expect("re-claimed after lease expiry");
    assert_eq!(again.attempts, 2);
    assert!(!q.renew(&job.id, "w1", 1000).await.unwrap());
    assert!(
        !q.complete(&job, "w1", "{}", &[]).await.unwrap(),
        "the first worker lost its lease"
    );
    assert_eq!(
        q.fail(&again, "w2", "boom", 2, 0.01, 0.01).await.unwrap(),
        Some(DEAD)
    );
    assert!(q.claim(&pipes, "w3", 1000).await.unwrap().is_none());
    assert!(q.retry(&job.id).await.unwrap());
    let third = q.claim(&pipes, "w3", 1000).await.unwrap().expect("retried");
    assert_eq!(third.attempts, 1);
    assert!(q.complete(&third, "w3", "{\"ok\":1}", &[]).await.unwrap());
    assert_eq!(q.get(&job.id).await.unwrap().unwrap().state, DONE);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_workers_claim_every_job_exactly_once() {
    let (_dir, url) = fresh();
    let creator = Queue::new(Index::open(&url).await.unwrap());
    let jobs = 120;
    for i in 0..jobs {
        creator
            .create(&format!("5.{i}"), 1, "noop", &["r".into()], &[])
            .await
            .unwrap();
    }
    // six "processes", two slots each
    let mut tasks = Vec::new();
    for p in 0..6 {
        let q = Queue::new(Index::open(&url).await.unwrap());
        for s in 0..2 {
            let q = q.clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("p{p}s{s}");
                let mut done = Vec::new();
                for _ in 0..(jobs * 2) {
                    match q.claim(&["noop".into()], &owner, 60_000).await.unwrap() {
                        Some(job) => {
                            assert!(q.complete(&job, &owner, "{}", &[]).await.unwrap());
                            done.push(job.id);
                        }
                        None => break,
                    }
                }
                done
            }));
        }
    }
    let mut per_job: HashMap<String, usize> = HashMap::new();
    let mut busy_workers = 0;
    for t in tasks {
        let done = t.await.unwrap();
        busy_workers += usize::from(!done.is_empty());
        for id in done {
            *per_job.entry(id).or_default() += 1;
        }
    }
    assert_eq!(per_job.len(), jobs, "every job done");
    assert!(per_job.values().all(|&n| n == 1), "no job done twice");
    assert!(busy_workers >= 2, "the work was shared");
    let listed = creator.list(None).await.unwrap();
    assert!(listed.iter().all(|j| j.state == DONE && j.attempts == 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_routers_route_each_completed_series_once() {
    let (_dir, url) = fresh();
    let settings = segnode::config::Settings::load_from_str_for_tests(
        r#"
[[rules]]
name = "chest"
pipelines = ["lung"]
destinations = []
[rules.match]
modality = ["CT"]
"#,
    );
    let router = settings.router().unwrap();
    let a = Index::open(&url).await.unwrap();
    let b = Index::open(&url).await.unwrap();
    a.begin_association(&assoc("x", "rx")).await.unwrap();
    let n = 25;
    for i in 0..n {
        let uid = format!("7.{i}");
        a.record_instance(&record(&uid, &format!("{uid}.1"), 0.0, "x"))
            .await
            .unwrap();
    }
    for s in a.receiving_series().await.unwrap() {
        assert!(a.complete_series(&s, "test", false).await.unwrap());
    }
    let (ra, rb) = (router.clone(), router.clone());
    let (ia, ib) = (a.clone(), b.clone());
    let ta = tokio::spawn(async move { route_completed(&ia, &ra).await.unwrap() });
    let tb = tokio::spawn(async move { route_completed(&ib, &rb).await.unwrap() });
    let created = ta.await.unwrap() + tb.await.unwrap();
    assert_eq!(created, n, "one job per series");
    assert_eq!(route_completed(&a, &router).await.unwrap(), 0);
    assert_eq!(Queue::new(a.clone()).list(None).await.unwrap().len(), n);
    assert_eq!(
        a.event_count("routed").await.unwrap(),
        n as i64,
        "each series routed (and its history written) once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dispatchers_sharing_the_outbox_take_each_delivery_once() {
    let (_dir, url) = fresh();
    let index = Index::open(&url).await.unwrap();
    let q = Queue::new(index.clone());
    let items = 60;
    for i in 0..items {
        q.create(
            &format!("8.{i}"),
            1,
            "lung",
            &["r".into()],
            &["pacs".into()],
        )
        .await
        .unwrap();
        let job = q
            .claim(&["lung".into()], "w", 60_000)
            .await
            .unwrap()
            .unwrap();
        assert!(q.complete(&job, "w", "{}", &[delivery(i)]).await.unwrap());
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let outbox = Outbox::new(Index::open(&url).await.unwrap());
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..items {
                let batch = outbox.claim("pacs", 5, 600_000).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                got.extend(batch.into_iter().map(|d| d.path));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(total, items, "no delivery taken twice");
    assert_eq!(all.len(), items, "every delivery taken");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_created_by_one_process_wakes_the_workers_of_another() {
    let (_dir, url) = fresh();
    let worker_side = Index::open(&url).await.unwrap();
    worker_side.listen();
    let router_side = if postgres_selected() {
        Index::open(&url).await.unwrap()
    } else {
        // SQLite has no cross-process wake-up (workers of other processes poll): same process
        worker_side.clone()
    };
    let mut jobs = worker_side.wakeups().subscribe(Topic::Jobs);
    let mut outbox = worker_side.wakeups().subscribe(Topic::Outbox);
    // the listener rings everything once it is connected: wait for that, then for the real thing
    jobs.wait(Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    jobs.arm();
    outbox.arm();
    let q = Queue::new(router_side.clone());
    assert!(q
        .create("6.1", 1, "lung", &[], &["pacs".into()])
        .await
        .unwrap());
    assert!(
        jobs.wait(Duration::from_secs(30)).await,
        "the job wakes the workers"
    );
    let job = q
        .claim(&["lung".into()], "w", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(q.complete(&job, "w", "{}", &[delivery(1)]).await.unwrap());
    assert!(
        outbox.wait(Duration::from_secs(30)).await,
        "the delivery wakes the dispatchers"
    );
    worker_side.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delivered_results_are_removed_only_when_every_destination_has_them() {
    let (dir, url) = fresh();
    let outbox_dir = dir.path().join("outbox");
    std::fs::create_dir_all(&outbox_dir).unwrap();
    let index = Index::open(&url).await.unwrap();
    let q = Queue::new(index.clone());
    let outbox = Outbox::new(index.clone());
    // one result for two destinations
    q.create("4.1", 1, "lung", &[], &["pacs".into(), "archive".into()])
        .await
        .unwrap();
    let job = q
        .claim(&["lung".into()], "w", 60_000)
        .await
        .unwrap()
        .unwrap();
    let both = ["pacs", "archive"].map(|d| NewDelivery {
        destination: d.into(),
        ..delivery(7)
    });
    assert!(q.complete(&job, "w", "{}", &both).await.unwrap());
    std::fs::write(outbox_dir.join("7.dcm"), b"seg").unwrap();
    let later = segnode_db::now_ms() + 60_000;
    // the PACS has it, the archive not yet: the file stays
    let pacs = outbox.claim("pacs", 10, 60_000).await.unwrap();
    outbox.mark_sent(&pacs[0].id, 0).await.unwrap();
    assert_eq!(
        purge_delivered(&outbox, &outbox_dir, later).await.unwrap(),
        0
    );
    assert!(outbox_dir.join("7.dcm").exists());
    // both have it, but not long enough ago: stays
    let archive = outbox.claim("archive", 10, 60_000).await.unwrap();
    outbox.mark_sent(&archive[0].id, 0).await.unwrap();
    let long_ago = segnode_db::now_ms() - 60_000;
    assert_eq!(
        purge_delivered(&outbox, &outbox_dir, long_ago)
            .await
            .unwrap(),
        0
    );
    // old enough: removed once, and a resend says why it cannot be done
    assert_eq!(
        purge_delivered(&outbox, &outbox_dir, later).await.unwrap(),
        1
    );
    assert!(!outbox_dir.join("7.dcm").exists());
    assert_eq!(
        purge_delivered(&outbox, &outbox_dir, later).await.unwrap(),
        0
    );
    let err = outbox.resend(&pacs[0].id).await.unwrap_err().to_string();
    assert!(err.contains("removed after delivery"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn routing_facts_of_a_multiframe_series_count_its_frames() {
    let (_dir, url) = fresh();
    let index = Index::open(&url).await.unwrap();
    index.begin_association(&assoc("a1", "rx-1")).await.unwrap();
    // one X-Ray 3D Craniofacial object: no top-level position, 120 frames, coronal (from its groups)
    let mut r = record("7.7", "7.7.1", 0.0, "a1");
    r.header.sop_class_uid = "1.2.840.10008.5.1.4.1.1.13.1.2".into();
    r.header.ipp = None;
    r.header.iop = Some([1.0, 0.0, 0.0, 0.0, 0.0, -1.0]);
    r.header.slice_thickness = Some(0.3);
    r.header.number_of_frames = Some(120);
    index.record_instance(&r).await.unwrap();
    // and a single-frame series beside it keeps counting instances
    index
        .record_instance(&record("8.8", "8.8.1", 0.0, "a1"))
        .await
        .unwrap();
    index
        .record_instance(&record("8.8", "8.8.2", 1.0, "a1"))
        .await
        .unwrap();
    let f = index.series_facts("7.7").await.unwrap().unwrap();
    assert_eq!(f.slices, 120);
    assert_eq!(f.orientation, Some([1.0, 0.0, 0.0, 0.0, 0.0, -1.0]));
    assert_eq!(f.slice_thickness, Some(0.3));
    assert_eq!(index.series_facts("8.8").await.unwrap().unwrap().slices, 2);
}

/// The series count is kept incrementally: a new SOP instance adds one, a duplicate row replaced with
/// new content adds none, and an instance that moves to another series counts there and no longer in
/// its old one.
#[tokio::test(flavor = "multi_thread")]
async fn instance_count_follows_new_replaced_and_moved_instances() {
    let (_dir, url) = fresh();
    let index = Index::open(&url).await.unwrap();
    index.begin_association(&assoc("a1", "rx")).await.unwrap();
    for (i, sop) in ["5.1", "5.2", "5.3"].iter().enumerate() {
        index
            .record_instance(&record("5", sop, i as f64, "a1"))
            .await
            .unwrap();
    }
    let mut again = record("5", "5.2", 1.0, "a1");
    again.content_hash = "changed".into();
    index.record_instance(&again).await.unwrap();
    let moved = record("6", "5.3", 2.0, "a1");
    index.record_instance(&moved).await.unwrap();
    let counts: HashMap<String, i64> = index
        .list_series()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.series_uid, s.instance_count))
        .collect();
    assert_eq!(counts.get("5"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("6"), Some(&1), "{counts:?}");
}

/// A late instance from the same caller shortly after a completion at release teaches the index that
/// this caller splits series (once, with a `learnt` history entry); after a completion that waited,
/// a late instance is only a new revision.
#[tokio::test(flavor = "multi_thread")]
async fn late_instance_after_completion_at_release_learns_a_splitting_caller() {
    let (_dir, url) = fresh();
    let index = Index::open(&url).await.unwrap();
    index.begin_association(&assoc("b1", "rx")).await.unwrap();
    // completed after the settle wait: a late instance is not a split
    index
        .record_instance(&record("7", "7.1", 0.0, "b1"))
        .await
        .unwrap();
    let s = index.receiving_series().await.unwrap().remove(0);
    assert!(index.complete_series(&s, "waited", false).await.unwrap());
    let o = index
        .record_instance(&record("7", "7.2", 1.0, "b1"))
        .await
        .unwrap();
    assert!(o.reopened);
    assert!(index.splitting_callers_learnt().await.unwrap().is_empty());
    // completed at release: the same caller sending more of it is learnt
    index
        .record_instance(&record("8", "8.1", 0.0, "b1"))
        .await
        .unwrap();
    let s = index
        .receiving_series()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.series_uid == "8")
        .unwrap();
    assert!(index.complete_series(&s, "at release", true).await.unwrap());
    let o = index
        .record_instance(&record("8", "8.2", 1.0, "b1"))
        .await
        .unwrap();
    assert_eq!(o.revision, 2);
    let learnt: Vec<String> = index
        .splitting_callers_learnt()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.calling_ae)
        .collect();
    assert_eq!(learnt, vec!["STORESCU"]);
    let learnt = index
        .series_events("8")
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "learnt")
        .count();
    assert_eq!(learnt, 1);
}
