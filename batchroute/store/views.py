"""Views redefined by later migrations, kept here so that `migrations.py` stays small.
Like a migration, each is frozen once released: a change is a new constant and migration."""

from __future__ import annotations

from .columns import MONEY

# A batch cannot be cancelled once submitted (batch-api.md §6): until a run collects it, its
# reservation is that day's committed spend, as the run's start and `report` count it
# (`batches.open_reserved`: its intent's UTC day, not collected, not closed).
M13_DAILY_SPEND = f"""
CREATE OR REPLACE VIEW daily_spend AS
    WITH spent AS (
        SELECT CAST(started_at AS DATE) AS day, job_name, SUM(cost_usd) AS usd
        FROM attempts GROUP BY ALL),
    out AS (
        SELECT CAST(intent_at AS DATE) AS day, job_name, SUM(reserved_usd) AS usd
        FROM batches WHERE settled_usd IS NULL
            AND status NOT IN ('collected', 'abandoned', 'rejected')
        GROUP BY ALL),
    j AS (
        SELECT day, job_name, CAST(COALESCE(s.usd, 0) AS {MONEY}) AS spent_usd,
               CAST(COALESCE(o.usd, 0) AS {MONEY}) AS batches_out_usd
        FROM spent s FULL OUTER JOIN out o USING (day, job_name))
    SELECT day, job_name AS scope, spent_usd + batches_out_usd AS cost_usd, spent_usd,
           batches_out_usd
    FROM j
    UNION ALL
    SELECT day, '*' AS scope, SUM(spent_usd + batches_out_usd), SUM(spent_usd),
           SUM(batches_out_usd)
    FROM j GROUP BY day;
"""
"""Migration 13 (gaps6): `daily_spend.cost_usd` is what counts against that day's cap: the
attempts' sum (`spent_usd`) plus the reservations of that day's batches still out
(`batches_out_usd`). Before, the view summed `attempts` only, below the provider's bill while
a batch was out (`report` counted it since stop 24)."""
