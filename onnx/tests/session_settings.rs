//! `SessionSettings` reach ONNX Runtime: the CPU arena keeps a vision run from faulting its
//! activations in anew each time, and `intra_threads` sets the size of each session's pool.
//! One test in its own binary, so that page faults and threads counted are this test's alone.

mod common;
use common::*;
use quire_onnx::gemma4::{Budget, Gemma4, LoadOptions};
use quire_onnx::session::SessionSettings;

fn load(session: SessionSettings) -> Gemma4 {
    let opts = LoadOptions {
        session,
        ..Default::default()
    };
    Gemma4::load(env(), tiny_dir(), &opts).unwrap()
}

/// The process's minor page faults (field 10 of /proc/self/stat).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    after_comm.split(' ').nth(7).unwrap().parse().unwrap()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Minor faults of the third of three vision runs (the first two warm up).
fn faults_of_a_warm_vision_run(m: &mut Gemma4) -> u64 {
    let img = load_image("images/grad_640x480.png");
    let p = m
        .preprocess(&img, Some(Budget::try_from(560).unwrap()))
        .unwrap();
    m.encode_images(&[&p]).unwrap();
    m.encode_images(&[&p]).unwrap();
    let before = minor_faults();
    m.encode_images(&[&p]).unwrap();
    minor_faults() - before
}

#[test]
fn the_cpu_arena_and_thread_count_reach_onnx_runtime() {
    if !std::path::Path::new("/proc/self/stat").exists() {
        eprintln!("skipped: needs /proc");
        return;
    }
    // Arena: on by default, and then a warm run reuses its buffers.
    assert!(SessionSettings::default().cpu_arena);
    let mut with_arena = load(SessionSettings::default());
    let arena_faults = faults_of_a_warm_vision_run(&mut with_arena);
    drop(with_arena);
    let mut without = load(SessionSettings {
        cpu_arena: false,
        ..SessionSettings::default()
    });
    let plain_faults = faults_of_a_warm_vision_run(&mut without);
    drop(without);
    assert!(
        plain_faults > 1000 && arena_faults * 10 < plain_faults,
        "minor faults of a warm vision run: {arena_faults} with the arena, {plain_faults} without"
    );

    // Threads: each of the three sessions gets a pool of intra_threads - 1 workers (the
    // calling thread is the last).
    let threads_started_by_loading = |intra_threads: usize| {
        let before = threads();
        let m = load(SessionSettings {
            intra_threads,
            ..SessionSettings::default()
        });
        let started = threads() - before;
        drop(m);
        started
    };
    let (with_four, with_one) = (threads_started_by_loading(4), threads_started_by_loading(1));
    assert_eq!(
        (with_four, with_one),
        (9, 0),
        "threads started by loading the model's three sessions"
    );
}
