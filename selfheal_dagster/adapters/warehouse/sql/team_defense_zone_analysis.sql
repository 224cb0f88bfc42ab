-- For every date d of the spine ($days) and team playing on d: what opponents shot against
-- it, by zone, in the $lookback days before d. Ratings are allowed accuracy over league
-- accuracy in the same window (> 1 = weak defense); a team with no games in the window gets
-- the league-average rating 1.0. History is read once, bounded to [$since, $until).
WITH spine AS (
    SELECT CAST(d AS DATE) AS d FROM UNNEST($days) AS t(d)
),
schedule AS (
    SELECT x.* FROM {nbac_schedule} AS x JOIN spine AS s ON x.game_date = s.d
    WHERE x.game_date BETWEEN $first AND $last
),
teams_today AS (
    SELECT game_date AS d, home_team AS team_abbr FROM schedule
    UNION ALL
    SELECT game_date AS d, away_team AS team_abbr FROM schedule
),
boxscores AS (
    SELECT * FROM {bdl_player_boxscores}
    WHERE game_date >= $since AND game_date < $until
),
allowed AS (
    SELECT
        s.d,
        b.opponent_abbr AS team_abbr,
        b.game_id,
        SUM(b.points) AS pts,
        SUM(b.paint_fgm) AS paint_fgm,
        SUM(b.paint_fga) AS paint_fga,
        SUM(b.mid_fgm) AS mid_fgm,
        SUM(b.mid_fga) AS mid_fga,
        SUM(b.three_pm) AS three_pm,
        SUM(b.three_pa) AS three_pa
    FROM spine AS s
    JOIN boxscores AS b ON DATE_DIFF('day', b.game_date, s.d) BETWEEN 1 AND $lookback
    GROUP BY s.d, b.opponent_abbr, b.game_id
),
league AS (
    SELECT
        s.d,
        1.0 * SUM(a.paint_fgm) / NULLIF(SUM(a.paint_fga), 0) AS paint_pct,
        1.0 * SUM(a.mid_fgm) / NULLIF(SUM(a.mid_fga), 0) AS mid_pct,
        1.0 * SUM(a.three_pm) / NULLIF(SUM(a.three_pa), 0) AS three_pct
    FROM spine AS s
    LEFT JOIN allowed AS a ON a.d = s.d
    GROUP BY s.d
),
per_team AS (
    SELECT
        d,
        team_abbr,
        COUNT(*) AS games_in_window,
        AVG(1.0 * pts) AS opp_points_pg,
        AVG(1.0 * paint_fga) AS opp_paint_fga_pg,
        1.0 * SUM(paint_fgm) / NULLIF(SUM(paint_fga), 0) AS opp_paint_pct,
        AVG(1.0 * mid_fga) AS opp_mid_fga_pg,
        1.0 * SUM(mid_fgm) / NULLIF(SUM(mid_fga), 0) AS opp_mid_pct,
        AVG(1.0 * three_pa) AS opp_three_pa_pg,
        1.0 * SUM(three_pm) / NULLIF(SUM(three_pa), 0) AS opp_three_pct
    FROM allowed
    GROUP BY d, team_abbr
)
SELECT
    t.d AS analysis_date,
    t.team_abbr,
    COALESCE(p.games_in_window, 0) AS games_in_window,
    p.opp_points_pg,
    p.opp_paint_fga_pg,
    p.opp_paint_pct,
    p.opp_mid_fga_pg,
    p.opp_mid_pct,
    p.opp_three_pa_pg,
    p.opp_three_pct,
    COALESCE(p.opp_paint_pct / NULLIF(l.paint_pct, 0), 1.0) AS paint_defense_rating,
    COALESCE(p.opp_mid_pct / NULLIF(l.mid_pct, 0), 1.0) AS mid_defense_rating,
    COALESCE(p.opp_three_pct / NULLIF(l.three_pct, 0), 1.0) AS three_defense_rating
FROM teams_today AS t
LEFT JOIN per_team AS p ON p.d = t.d AND p.team_abbr = t.team_abbr
JOIN league AS l ON l.d = t.d
