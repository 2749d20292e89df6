-- WyEli embedded SQLite schema, migration 002: every candidate is stored with the gate's verdict and the evidence.
--
-- signals.kind        'trade' (a trade call), 'watch' (a watch note, not a trade call) or 'gated' (kept, never posted);
--                     rows stored before this migration were posted signals and keep 'trade'.
-- signals.gate_reason the gate's reason code ('' for a trade call; why a watch note is not a trade call; why a
--                     candidate was gated).
-- signals.structure_id the same for every candidate from one market structure ('' when unknown).
-- signals.p_win, expected_r, expected_r_lo, expected_r_hi: the evidence model's estimates of the trade's net R
--                     (NULL for rows stored before the evidence model: those never count in the live track record).
-- signals.evidence    the whole evidence object as JSON text (Evidence.to_dict), NULL when not assessed.

ALTER TABLE signals ADD COLUMN kind TEXT NOT NULL DEFAULT 'trade' CHECK (kind IN ('trade', 'watch', 'gated'));
ALTER TABLE signals ADD COLUMN gate_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE signals ADD COLUMN structure_id TEXT NOT NULL DEFAULT '';
ALTER TABLE signals ADD COLUMN p_win REAL CHECK (p_win IS NULL OR (p_win >= 0 AND p_win <= 1));
ALTER TABLE signals ADD COLUMN expected_r REAL;
ALTER TABLE signals ADD COLUMN expected_r_lo REAL;
ALTER TABLE signals ADD COLUMN expected_r_hi REAL;
ALTER TABLE signals ADD COLUMN evidence TEXT;

-- the outbox reads trade calls / watch notes per destination in candle order; the gate seed reads them per stream
CREATE INDEX IF NOT EXISTS signals_kind_time ON signals (kind, candle_time, id);
CREATE INDEX IF NOT EXISTS signals_structure ON signals (structure_id) WHERE structure_id <> '';
