//! `docs/openapi.yaml` is a valid OpenAPI document and describes exactly the routes the
//! driver serves.

use cellmatrix::handlers::driver::ROUTES;
use cellmatrix_tests::run_python;

#[test]
fn the_openapi_document_is_valid_and_matches_the_routes() {
    let spec = cellmatrix_tests::repo_root().join("docs/openapi.yaml");
    let routes: Vec<String> = ROUTES.iter().map(|(m, p)| format!("{m} {p}")).collect();
    let mut args: Vec<std::ffi::OsString> = vec!["--spec".into(), spec.into()];
    args.extend(routes.iter().map(Into::into));
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let said = run_python("check_openapi.py", &refs);
    assert!(
        said.contains(&format!("ok openapi: {} routes", ROUTES.len())),
        "{said}"
    );
}
