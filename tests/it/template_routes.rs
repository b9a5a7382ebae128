//! The SAM template routes exactly the API's routes to the driver: a route the template
//! lacks is a 404 from API Gateway that no test of the driver would show.

use cellmatrix::handlers::driver::ROUTES;
use cellmatrix_tests::repo_root;

#[test]
fn the_template_declares_exactly_the_routes_the_driver_serves() {
    let template = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    let mut declared: Vec<String> = template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("RouteKey:"))
        .map(|k| k.trim().to_string())
        .collect();
    declared.sort();
    let mut served: Vec<String> = ROUTES.iter().map(|(m, p)| format!("{m} {p}")).collect();
    served.sort();
    assert_eq!(declared, served);
}
