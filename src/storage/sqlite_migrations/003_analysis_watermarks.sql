-- Migration 003: the "analysed up to" watermark per stream (issue 11).
-- analysed_to is the open time (UTC epoch ms) of the newest candle of the stream whose analysis results
-- (its signals) are stored; the bot commits it in the same transaction as those signals and, on start,
-- re-analyses every stored candle after it, so a crash between the candle write and the signal write
-- loses nothing. Existing streams count as analysed up to their newest stored candle (they were
-- analysed by the program that stored them; re-analysing 90 days of history would only be slow).

CREATE TABLE IF NOT EXISTS analysis_watermarks (
    symbol      TEXT    NOT NULL,
    timeframe   TEXT    NOT NULL,
    analysed_to INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (symbol, timeframe)
) WITHOUT ROWID;

INSERT OR IGNORE INTO analysis_watermarks (symbol, timeframe, analysed_to, updated_at)
SELECT symbol, timeframe, MAX(open_time), CAST(strftime('%s', 'now') AS INTEGER) * 1000
FROM candles GROUP BY symbol, timeframe;
