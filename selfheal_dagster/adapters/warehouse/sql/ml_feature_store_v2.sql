-- For every date d of the spine ($days) and player scheduled on d: the model's feature
-- vector. Consensus lines average every bookmaker's line for the game on d; a game without
-- lines keeps its players with NULL lines. Every input is read for the spine's dates only
-- ([$first, $last]), so BigQuery scans only those partitions.
WITH spine AS (
    SELECT CAST(d AS DATE) AS d FROM UNNEST($days) AS t(d)
),
odds AS (
    SELECT * FROM {odds_api_game_lines} WHERE game_date BETWEEN $first AND $last
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
composite AS (
    SELECT * FROM {player_composite_factors} WHERE analysis_date BETWEEN $first AND $last
),
lines AS (
    SELECT
        o.game_date AS d,
        o.game_id,
        AVG(CASE WHEN o.market = 'spreads' AND o.outcome = o.home_team THEN o.point END)
            AS home_spread,
        AVG(CASE WHEN o.market = 'totals' AND o.outcome = 'Over' THEN o.point END)
            AS game_total,
        AVG(CASE WHEN o.market = 'h2h' AND o.outcome = o.home_team THEN o.price END)
            AS home_moneyline,
        AVG(CASE WHEN o.market = 'h2h' AND o.outcome = o.away_team THEN o.price END)
            AS away_moneyline,
        COUNT(DISTINCT o.bookmaker) AS bookmakers
    FROM spine AS x
    JOIN odds AS o ON o.game_date = x.d
    GROUP BY o.game_date, o.game_id
)
SELECT
    c.game_date,
    c.player_id,
    c.player_name,
    c.game_id,
    c.team_abbr,
    c.opponent_abbr,
    c.is_home,
    c.points_avg_last_5,
    c.points_avg_last_10,
    c.minutes_avg_last_5,
    c.minutes_avg_last_10,
    s.paint_share,
    s.three_share,
    d.paint_defense_rating AS opp_paint_defense_rating,
    d.three_defense_rating AS opp_three_defense_rating,
    f.matchup_factor,
    f.fatigue_factor,
    f.composite_adjustment,
    c.days_rest,
    c.is_back_to_back,
    CASE WHEN c.is_home THEN l.home_spread ELSE -l.home_spread END AS team_spread,
    l.game_total,
    CAST(ROUND(CASE WHEN c.is_home THEN l.home_moneyline ELSE l.away_moneyline END) AS BIGINT)
        AS team_moneyline,
    COALESCE(l.bookmakers, 0) AS bookmakers,
    'v2' AS feature_version
FROM spine AS x
JOIN cache AS c ON c.game_date = x.d
LEFT JOIN shot_zones AS s
    ON s.analysis_date = c.game_date AND s.player_id = c.player_id
LEFT JOIN defense AS d
    ON d.analysis_date = c.game_date AND d.team_abbr = c.opponent_abbr
LEFT JOIN composite AS f
    ON f.analysis_date = c.game_date AND f.player_id = c.player_id
LEFT JOIN lines AS l ON l.d = c.game_date AND l.game_id = c.game_id
