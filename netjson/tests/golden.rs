//! Golden files: `tests/golden/<case>/input.json` (NetJSON, rendered for the backend named in an
//! optional `backend` file, else OpenWrt) must render to exactly the files under `expected/`,
//! byte for byte. The expected files are netjsonconfig's output for the same input.

use std::collections::BTreeMap;
use std::path::Path;

use fleetmq_netjson::{Backend, render};

fn collect(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read expected dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name");
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        if path.is_dir() {
            collect(&path, &rel, out);
        } else {
            out.insert(
                rel,
                std::fs::read_to_string(&path).expect("read expected file"),
            );
        }
    }
}

#[test]
fn every_golden_case_renders_exactly_its_expected_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        // Subdirectories without an input.json group other suites' cases (vpn/: tests/vpn.rs).
        .filter(|p| p.join("input.json").is_file())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden cases found");
    for case in cases {
        let name = case
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let input = std::fs::read_to_string(case.join("input.json")).expect("input.json");
        let config: serde_json::Value = serde_json::from_str(&input).expect("input is JSON");
        let backend = match std::fs::read_to_string(case.join("backend")) {
            Ok(text) => Backend::parse(text.trim()).expect("backend name"),
            Err(_) => Backend::OpenWrt,
        };
        let rendered: BTreeMap<String, String> = render(&config, backend)
            .unwrap_or_else(|e| panic!("{name}: refused: {e}"))
            .into_iter()
            .map(|f| (f.path, f.contents))
            .collect();
        let mut expected = BTreeMap::new();
        collect(&case.join("expected"), "", &mut expected);
        assert_eq!(
            rendered.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{name}: file list"
        );
        for (path, contents) in &expected {
            assert_eq!(&rendered[path], contents, "{name}: {path}");
        }
    }
}
