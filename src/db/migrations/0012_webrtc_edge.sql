-- Scale-out (#25): the edge that holds a WebRTC session's peer state (its URL, as the
-- other edges reach it), so a request for the session that lands on another edge is
-- forwarded there instead of answered "state lost". NULL: the embedded default.
ALTER TABLE webrtc_sessions ADD COLUMN edge_url TEXT;
