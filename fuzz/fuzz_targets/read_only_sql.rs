//! The read-only SQL guard on any text: a statement that writes is never planned into a plan
//! that runs, and nothing panics.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    runtime().block_on(async {
        let ctx = lakehouse_core::sql::context();
        if let Ok(df) = lakehouse_core::sql::read_only(&ctx, sql).await {
            assert!(
                !writes(df.logical_plan()),
                "a writing plan passed the guard: {sql}"
            );
        }
    });
});

/// Whether a plan would write: DML, DDL, COPY or a session statement anywhere in it.
fn writes(plan: &datafusion::logical_expr::LogicalPlan) -> bool {
    use datafusion::logical_expr::LogicalPlan as P;
    let here = matches!(plan, P::Dml(_) | P::Ddl(_) | P::Copy(_) | P::Statement(_));
    here || plan.inputs().iter().any(|p| writes(p))
}
