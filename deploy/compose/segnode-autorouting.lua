-- Auto-routing of the demo PACS (Orthanc) of segnode's docker compose deployment.
--
-- Every CT series that Orthanc receives (over DICOM or uploaded in the web interface) is sent to segnode
-- once it is stable (no new instance for StableAge seconds, see orthanc.json): one association per
-- series, which is also what segnode's series completion likes best. Tested with Orthanc 1.10 (Debian
-- bookworm) by tests/compose.rs.
--
-- No loop: segnode sends its results back to this Orthanc as DICOM SEG (Modality SEG) with the calling
-- AE title SEGNODE. Such a series is never forwarded: it is skipped by its modality (only CT goes out,
-- SEG explicitly never) and, should segnode ever send something else, by its sender's AE title.

local SEGNODE_MODALITY = 'segnode' -- the entry of DicomModalities in orthanc.json
local SEGNODE_AET = 'SEGNODE' -- the calling AE title segnode uses when it delivers results
local FORWARDED_MODALITIES = { CT = true }

-- The calling AE title that stored the series' first instance over DICOM ('' when it was uploaded over
-- HTTP or came from anywhere else).
local function sender_aet(seriesId)
  local series = ParseJson(RestApiGet('/series/' .. seriesId))
  local first = series['Instances'] and series['Instances'][1]
  if first == nil then
    return ''
  end
  local keys = ParseJson(RestApiGet('/instances/' .. first .. '/metadata'))
  for _, key in ipairs(keys) do
    if key == 'RemoteAET' then
      return RestApiGet('/instances/' .. first .. '/metadata/RemoteAET') or ''
    end
  end
  return ''
end

function OnStableSeries(seriesId, tags, metadata)
  local modality = string.upper(tags['Modality'] or '')
  if modality == 'SEG' then
    print('segnode auto-routing: series ' .. seriesId .. ' is a SEG (a result): not forwarded')
    return
  end
  if not FORWARDED_MODALITIES[modality] then
    print('segnode auto-routing: series ' .. seriesId .. ' has modality ' .. modality .. ': not forwarded')
    return
  end
  local sender = string.upper(sender_aet(seriesId))
  if sender == SEGNODE_AET then
    print('segnode auto-routing: series ' .. seriesId .. ' came from segnode: not forwarded')
    return
  end
  print('segnode auto-routing: sending CT series ' .. seriesId .. ' to ' .. SEGNODE_MODALITY)
  -- The whole series in one association, as an Orthanc job (Lua's SendToModality takes single instances
  -- only). A failed job is listed in /jobs and can be resubmitted there.
  RestApiPost('/modalities/' .. SEGNODE_MODALITY .. '/store',
    DumpJson({ Resources = { seriesId }, Asynchronous = true }, true))
end
