//! fleetmq's renderer against the real netjsonconfig (OpenWISP's), on the corpus in
//! `tests/corpus.json`: every case is rendered by both, and the archives' files must match (after
//! normalizing trailing whitespace); for the OpenWrt backend the archives must be byte-identical
//! (same checksum). Cases with `"differs"` are where fleetmq deliberately renders differently
//! (docs/config.md, "Rendering"): the test checks that the difference is exactly the documented one.
//!
//! netjsonconfig comes from the machine's python3 if it has it, else from a venv under
//! CARGO_TARGET_TMPDIR with a pinned version (installed once; a lock directory keeps two test
//! processes from installing at the same time).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use fleetmq_netjson::{Backend, archive, checksum, render};
use serde_json::Value;

const NETJSONCONFIG: &str = "netjsonconfig==1.3.1";

/// Renders every case with netjsonconfig: `{name: {"files": [[path, mode, contents]], "md5": ..}}`
/// or `{name: {"error": ...}}`.
const RENDER_PY: &str = r#"
import hashlib, io, json, sys, tarfile
from netjsonconfig import OpenWrt, OpenWisp
out = {}
real_stdout, sys.stdout = sys.stdout, sys.stderr  # netjsonconfig prints warnings
for case in json.load(sys.stdin):
    cls = OpenWisp if case.get("backend") == "OpenWisp" else OpenWrt
    try:
        data = cls(case["config"]).generate().getvalue()
    except Exception as e:
        out[case["name"]] = {"error": str(e)}
        continue
    tar = tarfile.open(fileobj=io.BytesIO(data))
    files = [[m.name, m.mode, tar.extractfile(m).read().decode("utf-8", "replace")] for m in tar.getmembers()]
    out[case["name"]] = {"files": files, "md5": hashlib.md5(data).hexdigest()}
json.dump(out, real_stdout)
"#;

fn imports_netjsonconfig(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import netjsonconfig"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A python that can import netjsonconfig, installing it into a venv if needed.
fn python() -> PathBuf {
    let system = PathBuf::from("python3");
    if imports_netjsonconfig(&system) {
        return system;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("netjsonconfig-venv");
    let python = dir.join("bin").join("python");
    let lock = Path::new(env!("CARGO_TARGET_TMPDIR")).join("netjsonconfig-venv.lock");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if imports_netjsonconfig(&python) {
            return python;
        }
        match std::fs::create_dir(&lock) {
            Ok(()) => {
                let result = install(&dir);
                let _ = std::fs::remove_dir(&lock);
                if let Err(e) = result {
                    panic!("installing {NETJSONCONFIG} into {}: {e}", dir.display());
                }
            }
            Err(_) => {
                // Another test process is installing; a lock older than ten minutes is left over
                // from one that died.
                let stale = std::fs::metadata(&lock)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > Duration::from_secs(600));
                if stale {
                    let _ = std::fs::remove_dir(&lock);
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for another process to install {NETJSONCONFIG}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

fn install(dir: &Path) -> Result<(), String> {
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    };
    let _ = std::fs::remove_dir_all(dir);
    run(Command::new("python3").arg("-m").arg("venv").arg(dir))?;
    run(Command::new(dir.join("bin").join("pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        NETJSONCONFIG,
    ]))
}

fn normalize(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines.join("\n").trim_end().to_string()
}

fn backend_of(case: &Value) -> Backend {
    match case["backend"].as_str() {
        Some("OpenWisp") => Backend::OpenWisp,
        _ => Backend::OpenWrt,
    }
}

/// Scripts netjsonconfig's OpenWisp backend adds that fleetmq leaves out (docs/config.md).
const OPENWISP_SCRIPTS: &[&str] = &["install.sh", "uninstall.sh", "tc_script.sh"];

#[test]
fn fleetmq_renders_the_corpus_as_netjsonconfig_does() {
    let corpus_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus.json");
    let corpus_text = std::fs::read_to_string(&corpus_path).expect("read corpus");
    let corpus: Vec<Value> = serde_json::from_str(&corpus_text).expect("parse corpus");
    assert!(corpus.len() >= 30, "the corpus keeps at least 30 cases");

    let mut child = Command::new(python())
        .args(["-c", RENDER_PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(corpus_text.as_bytes())
        .expect("write corpus");
    let output = child.wait_with_output().expect("python output");
    assert!(
        output.status.success(),
        "netjsonconfig failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs: BTreeMap<String, Value> =
        serde_json::from_slice(&output.stdout).expect("python's JSON");

    let mut failures = Vec::new();
    for case in &corpus {
        let name = case["name"].as_str().expect("case name");
        let backend = backend_of(case);
        let expected = &theirs[name];
        if let Some(error) = expected.get("error") {
            failures.push(format!("{name}: netjsonconfig refused the case: {error}"));
            continue;
        }
        let ours = match render(&case["config"], backend) {
            Ok(files) => files,
            Err(e) => {
                failures.push(format!("{name}: fleetmq refused the case: {e}"));
                continue;
            }
        };
        let their_files: Vec<(String, u32, String)> = expected["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| {
                (
                    f[0].as_str().unwrap_or_default().to_string(),
                    f[1].as_u64().unwrap_or_default() as u32,
                    f[2].as_str().unwrap_or_default().to_string(),
                )
            })
            .filter(|(path, _, _)| {
                backend != Backend::OpenWisp || !OPENWISP_SCRIPTS.contains(&path.as_str())
            })
            .collect();
        let our_paths: Vec<&str> = ours.iter().map(|f| f.path.as_str()).collect();
        let their_paths: Vec<&str> = their_files.iter().map(|f| f.0.as_str()).collect();
        if our_paths != their_paths {
            failures.push(format!(
                "{name}: files {our_paths:?} != netjsonconfig's {their_paths:?}"
            ));
            continue;
        }
        let differs = case["differs"].as_str();
        for (our, (path, mode, contents)) in ours.iter().zip(&their_files) {
            if our.mode != *mode {
                failures.push(format!("{name}: {path} mode {:o} != {mode:o}", our.mode));
            }
            // The documented differences, each checked to be exactly what docs/config.md says.
            let ours_as_theirs = match differs {
                Some("quotes") => our.contents.replace("'\\''", "'"),
                Some("spaces") => our.contents.replace("    ", ""),
                Some("tar-size") => {
                    let chars = our.contents.chars().count();
                    String::from_utf8_lossy(&our.contents.as_bytes()[..chars]).into_owned()
                }
                _ => our.contents.clone(),
            };
            if differs.is_some() && ours_as_theirs == our.contents {
                failures.push(format!(
                    "{name}: expected to differ ({differs:?}) but does not"
                ));
            }
            if normalize(&ours_as_theirs) != normalize(contents) {
                failures.push(format!(
                    "{name}: {path} differs\n--- fleetmq\n{}\n--- netjsonconfig\n{contents}",
                    our.contents
                ));
            }
        }
        if backend == Backend::OpenWrt && differs.is_none() {
            let ours_md5 = checksum(&archive(&ours));
            if ours_md5 != expected["md5"].as_str().unwrap_or_default() {
                failures.push(format!(
                    "{name}: archive checksum {ours_md5} != netjsonconfig's {}",
                    expected["md5"]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
