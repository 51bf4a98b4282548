//! A `Registry` owns a tokio runtime; async services create and drop
//! clients inside their own runtime, where dropping a runtime used to panic.

use cairn_registry::{Registry, RegistryOptions};

#[test]
fn dropping_a_registry_inside_async_code_does_not_panic() {
    for flavour in ["current_thread", "multi_thread"] {
        let rt = match flavour {
            "current_thread" => tokio::runtime::Builder::new_current_thread(),
            _ => tokio::runtime::Builder::new_multi_thread(),
        }
        .enable_all()
        .build()
        .unwrap();
        rt.block_on(async {
            let registry = Registry::new(RegistryOptions::from_env()).unwrap();
            drop(registry);
            // And one moved into a task and dropped there.
            let registry = Registry::new(RegistryOptions::from_env()).unwrap();
            tokio::spawn(async move { drop(registry) }).await.unwrap();
        });
    }
}
