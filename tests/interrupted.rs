//! Interrupting a backup at any moment leaves the repository usable: either no new snapshot
//! or a complete one, and the next backup completes and restores exactly.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn killed_backups_leave_a_usable_repository() {
    let env = Env::new();
    let src = env.path("src");
    for i in 0..6 {
        write(
            &src.join(format!("big{i}.bin")),
            &noise(100 + i, 12 * 1024 * 1024),
        );
    }
    for i in 0..300 {
        write(&src.join(format!("small/{i}.txt")), &noise(i, 3000));
    }
    env.init();
    // Kill at increasing delays: before any pack, between packs, around the commit.
    for delay_ms in [5u64, 60, 150, 300, 600, 1200] {
        let mut child = env
            .cmd(&["backup", "-q", src.to_str().unwrap()])
            .spawn()
            .unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(delay_ms) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill();
        let _ = child.wait();
        // Whatever happened, the repository opens and every snapshot in it restores exactly.
        let snaps = env.snapshots();
        eprintln!(
            "killed at {delay_ms} ms: {} snapshots, {} packs",
            snaps.len(),
            files_below(&env.repo.join("packs")).len()
        );
        for snap in snaps {
            let target = env.path(&format!(
                "check-{delay_ms}-{}",
                snap["short_id"].as_str().unwrap()
            ));
            env.restore(snap["id"].as_str().unwrap(), &target);
            assert_eq!(
                describe(&src),
                describe(&restored(&target, &src)),
                "after a kill at {delay_ms} ms"
            );
            std::fs::remove_dir_all(&target).unwrap();
        }
    }
    let before = env.snapshots().len();
    let last = env.backup_json(&[&src]);
    assert_eq!(env.snapshots().len(), before + 1);
    assert_eq!(last["partial"], false);
    let target = env.path("final");
    env.restore("latest", &target);
    assert_eq!(describe(&src), describe(&restored(&target, &src)));
}
