-- The usual Orthanc auto-routing recipe: every stable study goes to the modality "pacsnode"
-- (results included, when they come back). pacsnode must not loop on it.
function OnStableStudy(studyId, tags, metadata)
  RestApiPost('/modalities/pacsnode/store', studyId)
end
