-- Per player of a team playing on $d: shot profile and accuracy by zone over the player's
-- last 10 games in [$since, $d). The player's team is the team of their latest game.
WITH teams_today AS (
    SELECT home_team AS team_abbr FROM {nbac_schedule} WHERE game_date = $d
    UNION ALL
    SELECT away_team AS team_abbr FROM {nbac_schedule} WHERE game_date = $d
),
recent AS (
    SELECT
        b.player_id,
        b.player_name,
        b.team_abbr,
        b.fga,
        b.paint_fgm,
        b.paint_fga,
        b.mid_fgm,
        b.mid_fga,
        b.three_pm,
        b.three_pa,
        ROW_NUMBER() OVER (PARTITION BY b.player_id ORDER BY b.game_date DESC) AS rn
    FROM {bdl_player_boxscores} AS b
    WHERE b.game_date >= $since AND b.game_date < $d
),
last10 AS (
    SELECT
        player_id,
        COUNT(*) AS games,
        SUM(fga) AS fga,
        SUM(paint_fgm) AS paint_fgm,
        SUM(paint_fga) AS paint_fga,
        SUM(mid_fgm) AS mid_fgm,
        SUM(mid_fga) AS mid_fga,
        SUM(three_pm) AS three_pm,
        SUM(three_pa) AS three_pa
    FROM recent
    WHERE rn <= 10
    GROUP BY player_id
)
SELECT
    $d AS analysis_date,
    r.player_id,
    r.player_name,
    r.team_abbr,
    l.games AS games_in_window,
    1.0 * l.fga / l.games AS fga_pg,
    1.0 * l.paint_fga / NULLIF(l.fga, 0) AS paint_share,
    1.0 * l.mid_fga / NULLIF(l.fga, 0) AS mid_share,
    1.0 * l.three_pa / NULLIF(l.fga, 0) AS three_share,
    1.0 * l.paint_fgm / NULLIF(l.paint_fga, 0) AS paint_pct,
    1.0 * l.mid_fgm / NULLIF(l.mid_fga, 0) AS mid_pct,
    1.0 * l.three_pm / NULLIF(l.three_pa, 0) AS three_pct
FROM recent AS r
JOIN last10 AS l ON l.player_id = r.player_id
WHERE r.rn = 1 AND r.team_abbr IN (SELECT team_abbr FROM teams_today)
