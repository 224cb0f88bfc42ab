-- For every date d of the spine ($days) and player scheduled on d: the model's feature
-- vector. Consensus lines average every bookmaker's line for the game on d; a game without
-- lines keeps its players with NULL lines.
WITH spine AS (
    SELECT CAST(d AS DATE) AS d FROM UNNEST($days) AS t(d)
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
    JOIN {odds_api_game_lines} AS o ON o.game_date = x.d
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
JOIN {player_daily_cache} AS c ON c.game_date = x.d
LEFT JOIN {player_shot_zone_analysis} AS s
    ON s.analysis_date = c.game_date AND s.player_id = c.player_id
LEFT JOIN {team_defense_zone_analysis} AS d
    ON d.analysis_date = c.game_date AND d.team_abbr = c.opponent_abbr
LEFT JOIN {player_composite_factors} AS f
    ON f.analysis_date = c.game_date AND f.player_id = c.player_id
LEFT JOIN lines AS l ON l.d = c.game_date AND l.game_id = c.game_id
