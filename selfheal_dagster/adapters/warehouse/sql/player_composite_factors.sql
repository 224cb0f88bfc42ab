-- For every date d of the spine ($days) and player scheduled on d: how the player's shot
-- profile meets the opponent's zone defense (matchup), rest and minutes load (fatigue),
-- recent form, combined and clamped to [0.8, 1.2]. Every input is read for the spine's
-- dates only ([$first, $last]), so BigQuery scans only those partitions.
WITH spine AS (
    SELECT CAST(d AS DATE) AS d FROM UNNEST($days) AS t(d)
),
cache AS (
    SELECT * FROM {player_daily_cache} WHERE game_date BETWEEN $first AND $last
),
shot_zones AS (
    SELECT * FROM {player_shot_zone_analysis} WHERE analysis_date BETWEEN $first AND $last
),
defense AS (
    SELECT * FROM {team_defense_zone_analysis} WHERE analysis_date BETWEEN $first AND $last
),
factors AS (
    SELECT
        c.game_date AS d,
        c.player_id,
        c.team_abbr,
        c.opponent_abbr,
        c.game_id,
        COALESCE(
            s.paint_share * d.paint_defense_rating
            + s.mid_share * d.mid_defense_rating
            + s.three_share * d.three_defense_rating,
            1.0
        ) AS matchup_factor,
        CASE
            WHEN c.is_back_to_back THEN 0.94
            WHEN c.days_rest >= 3 THEN 1.02
            ELSE 1.0
        END - CASE WHEN c.minutes_avg_last_5 > 36 THEN 0.02 ELSE 0.0 END AS fatigue_factor,
        COALESCE(c.points_avg_last_5 / NULLIF(c.points_avg_last_10, 0), 1.0) AS form_trend
    FROM spine AS x
    JOIN cache AS c ON c.game_date = x.d
    LEFT JOIN shot_zones AS s
        ON s.analysis_date = c.game_date AND s.player_id = c.player_id
    LEFT JOIN defense AS d
        ON d.analysis_date = c.game_date AND d.team_abbr = c.opponent_abbr
)
SELECT
    d AS analysis_date,
    player_id,
    team_abbr,
    opponent_abbr,
    game_id,
    matchup_factor,
    fatigue_factor,
    form_trend,
    GREATEST(0.8, LEAST(1.2, matchup_factor * fatigue_factor * (1 + 0.5 * (form_trend - 1))))
        AS composite_adjustment
FROM factors
