//! The streaming contract in `gateway/wit/` parses, resolves, and offers the
//! worlds and interfaces guests target.

use wit_parser::Resolve;

#[test]
fn the_streaming_package_resolves_with_its_two_worlds() {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/wit"))
        .expect("the WIT parses and resolves");
    assert_eq!(
        resolve.packages[package].name.to_string(),
        "wasmgate:streaming@0.1.0"
    );
    let worlds = [
        (
            "websocket-service",
            ["websocket", "pubsub"],
            "websocket-handler",
        ),
        ("sse-service", ["sse", "pubsub"], "sse-handler"),
    ];
    for (world, imports, export) in worlds {
        let id = resolve
            .select_world(&[package], Some(world))
            .expect("the world exists");
        let world = &resolve.worlds[id];
        let imported: Vec<String> = world
            .imports
            .keys()
            .map(|key| resolve.name_world_key(key))
            .collect();
        for import in imports {
            let name = format!("wasmgate:streaming/{import}@0.1.0");
            assert!(imported.contains(&name), "{name} missing from {imported:?}");
        }
        let exported: Vec<String> = world
            .exports
            .keys()
            .map(|key| resolve.name_world_key(key))
            .collect();
        assert_eq!(exported, [format!("wasmgate:streaming/{export}@0.1.0")]);
    }
}
