//! The providers' own API (their settings, authenticated by stream key), on the admin
//! listener of the processes that hold providers.

use futures::future::BoxFuture;

use crate::context::{Context, Role};

pub struct ProviderApi;

impl Role for ProviderApi {
    fn announced_as(&self) -> Option<streamcdn_registry::Role> {
        None
    }

    fn start<'a>(self: Box<Self>, ctx: &'a mut Context) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            ctx.add_admin_routes(streamcdn_providers::api::router(ctx.providers()));
            Ok(())
        })
    }
}
