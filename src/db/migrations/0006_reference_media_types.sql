-- The declared media type of staged reference clips, so raw PCM (whose shape only the
-- media type names) can be decoded again by warm and repromote.

ALTER TABLE scaiecho_speakers ADD COLUMN reference_media_type TEXT;
ALTER TABLE scaispeak_voices ADD COLUMN reference_media_type TEXT;
