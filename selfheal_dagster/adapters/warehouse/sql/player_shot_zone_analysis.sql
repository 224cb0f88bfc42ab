-- For every date d of the spine ($days) and player of a team playing on d: shot profile and
-- accuracy by zone over the player's last 10 games in the $lookback days before d. The
-- player's team is the team of their latest game. History is read once for the whole spine,
-- bounded to [$since, $until).
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
recent AS (
    SELECT
        s.d,
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
        ROW_NUMBER() OVER (PARTITION BY s.d, b.player_id ORDER BY b.game_date DESC, b.game_id) AS rn
    FROM spine AS s
    JOIN boxscores AS b ON DATE_DIFF('day', b.game_date, s.d) BETWEEN 1 AND $lookback
),
last10 AS (
    SELECT
        d,
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
    GROUP BY d, player_id
)
SELECT
    r.d AS analysis_date,
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
JOIN last10 AS l ON l.d = r.d AND l.player_id = r.player_id
JOIN (SELECT DISTINCT d, team_abbr FROM teams_today) AS t
    ON t.d = r.d AND t.team_abbr = r.team_abbr
WHERE r.rn = 1
