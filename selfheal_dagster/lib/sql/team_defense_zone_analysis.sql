-- Per team playing on $d: what opponents shot against it, by zone, in [$since, $d).
-- Ratings are allowed accuracy over league accuracy in the same window (> 1 = weak defense);
-- a team with no games in the window gets the league-average rating 1.0.
WITH teams_today AS (
    SELECT home_team AS team_abbr FROM {nbac_schedule} WHERE game_date = $d
    UNION ALL
    SELECT away_team AS team_abbr FROM {nbac_schedule} WHERE game_date = $d
),
allowed AS (
    SELECT
        b.opponent_abbr AS team_abbr,
        b.game_id,
        SUM(b.points) AS pts,
        SUM(b.paint_fgm) AS paint_fgm,
        SUM(b.paint_fga) AS paint_fga,
        SUM(b.mid_fgm) AS mid_fgm,
        SUM(b.mid_fga) AS mid_fga,
        SUM(b.three_pm) AS three_pm,
        SUM(b.three_pa) AS three_pa
    FROM {bdl_player_boxscores} AS b
    WHERE b.game_date >= $since AND b.game_date < $d
    GROUP BY b.opponent_abbr, b.game_id
),
league AS (
    SELECT
        1.0 * SUM(paint_fgm) / NULLIF(SUM(paint_fga), 0) AS paint_pct,
        1.0 * SUM(mid_fgm) / NULLIF(SUM(mid_fga), 0) AS mid_pct,
        1.0 * SUM(three_pm) / NULLIF(SUM(three_pa), 0) AS three_pct
    FROM allowed
),
per_team AS (
    SELECT
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
    GROUP BY team_abbr
)
SELECT
    $d AS analysis_date,
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
LEFT JOIN per_team AS p ON p.team_abbr = t.team_abbr
CROSS JOIN league AS l
