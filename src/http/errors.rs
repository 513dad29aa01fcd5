//! `/v1/errors`: the code table, for people and programs (the console shows the fix
//! beside every failure from it).

use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ErrorCode;
use crate::extract::Json;

#[derive(Serialize, ToSchema)]
pub struct ErrorCodeInfo {
    code: &'static str,
    status: u16,
    /// The WebSocket close code of a stream that ends with it, if streams can.
    ws_close: Option<u16>,
    remediation: &'static str,
}

/// Every error code with its HTTP status, WebSocket close code and remediation.
#[utoipa::path(get, path = "/v1/errors", tag = "operations",
    responses((status = 200, body = Vec<ErrorCodeInfo>)))]
pub async fn list() -> Json<Vec<ErrorCodeInfo>> {
    Json(
        ErrorCode::ALL
            .iter()
            .map(|code| ErrorCodeInfo {
                code: code.as_str(),
                status: code.status().as_u16(),
                ws_close: code.ws_close_code(),
                remediation: code.remediation(),
            })
            .collect(),
    )
}
