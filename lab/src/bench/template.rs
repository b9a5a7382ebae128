//! What the deployment template (`template.yaml`) gives the functions, read with a YAML
//! parser: a measurement of a function runs under the function's own memory and
//! allocator settings. CloudFormation's short tags (`!Ref`, `!Sub`) parse as plain
//! values, which is all these look-ups need.

use yaml_rust2::{Yaml, YamlLoader};

/// The template's first document; `None` when the text is not YAML.
fn parse(template: &str) -> Option<Yaml> {
    YamlLoader::load_from_str(template).ok()?.into_iter().next()
}

/// A scalar as text: `2048` and `"2048"` alike.
fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The `Default` of parameter `name`.
pub fn template_default(template: &str, name: &str) -> Option<String> {
    scalar(&parse(template)?["Parameters"][name]["Default"])
}

/// The value of environment variable `name` that the template gives the worker: its
/// function's own `Environment`, else the `Globals`' (which every function merges).
pub fn template_environment(template: &str, name: &str) -> Option<String> {
    let doc = parse(template)?;
    let own = &doc["Resources"]["WorkerFunction"]["Properties"]["Environment"]["Variables"][name];
    let global = &doc["Globals"]["Function"]["Environment"]["Variables"][name];
    scalar(own).or_else(|| scalar(global))
}

/// The glibc allocator settings a function may get from the template, which a
/// measurement's child process takes too, so that it allocates as the function does.
pub const ALLOCATOR_ENV: [&str; 3] = [
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
];

/// Those of [`ALLOCATOR_ENV`] that the template gives the worker, as (name, value).
pub fn template_allocator_env(template: &str) -> Vec<(String, String)> {
    ALLOCATOR_ENV
        .iter()
        .filter_map(|&name| template_environment(template, name).map(|v| (name.to_string(), v)))
        .collect()
}

/// The architecture every function gets (`Globals.Function.Architectures`' first).
pub fn template_architecture(template: &str) -> Option<String> {
    scalar(&parse(template)?["Globals"]["Function"]["Architectures"][0])
}

/// The memory, in bytes, that the template gives the worker (`WorkerMemory`'s default,
/// in MB as Lambda counts them: MiB).
pub fn template_worker_memory(template: &str) -> Option<u64> {
    template_default(template, "WorkerMemory")?
        .parse::<u64>()
        .ok()
        .map(|mb| mb << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_parameter_default_from_the_template() {
        let text = "Parameters:\n  WorkerMemory:\n    Type: Number\n    # MB\n    Default: 2048\n  WorkerTimeout:\n    Default: 300\n";
        assert_eq!(template_worker_memory(text), Some(2048 << 20));
        assert_eq!(
            template_default(text, "WorkerTimeout").as_deref(),
            Some("300")
        );
        assert_eq!(template_default(text, "Missing"), None);
        // A parameter without a default does not take its neighbour's.
        let text = "Parameters:\n  WorkerMemory:\n    Type: Number\n  Other:\n    Default: 1\n";
        assert_eq!(template_worker_memory(text), None);
        assert_eq!(template_worker_memory("not: [yaml"), None);
    }

    #[test]
    fn the_worker_own_setting_wins_over_the_globals() {
        let text = "Globals:\n  Function:\n    Environment:\n      Variables:\n        A: \"1\"\n        B: 2\nResources:\n  WorkerFunction:\n    Properties:\n      MemorySize: !Ref WorkerMemory\n      Environment:\n        Variables:\n          B: !Sub \"3\"\n";
        assert_eq!(template_environment(text, "A").as_deref(), Some("1"));
        assert_eq!(template_environment(text, "B").as_deref(), Some("3"));
        assert_eq!(template_environment(text, "C"), None);
    }

    #[test]
    fn the_repository_template_gives_the_worker_its_memory() {
        let text = include_str!("../../../template.yaml");
        let bytes = template_worker_memory(text).expect("WorkerMemory has a default");
        assert!(bytes >= 128 << 20, "{bytes}");
        assert_eq!(
            template_environment(text, "MALLOC_ARENA_MAX").as_deref(),
            Some("2")
        );
        let names: Vec<String> = template_allocator_env(text)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            names, ALLOCATOR_ENV,
            "every allocator setting is in the template"
        );
    }

    #[test]
    fn the_cost_models_deployment_is_the_templates() {
        let text = include_str!("../../../template.yaml");
        let d = cellmatrix::cost::Deployment::default();
        for (f, name) in cellmatrix::cost::Lambda::ALL.into_iter().zip([
            "DriverMemory",
            "MapperMemory",
            "WorkerMemory",
            "ReducerMemory",
        ]) {
            let mb: u32 = template_default(text, name)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} has a numeric default"));
            assert_eq!(
                d.memory(f),
                mb,
                "{name}: cost.rs prices another memory size"
            );
        }
        assert_eq!(
            template_architecture(text).as_deref(),
            Some(d.architecture.as_str()),
            "cost.rs prices another architecture"
        );
    }
}
